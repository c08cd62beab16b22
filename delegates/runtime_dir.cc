#include "delegates/runtime_dir.h"

#include "common/log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace owrap {

namespace {
// sun_path holds 108 bytes including the terminating NUL.
constexpr size_t kMaxSocketPath = 107;
constexpr size_t kSuffix = 6;  // mkdtemp's XXXXXX

std::string prefix_for(const std::string& wrapper_name) {
  return "." + wrapper_name + "-delegate-";
}

UniqueFd open_dir(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

bool holds_answering_socket(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_socket(ec) && socket_answers(e.path().string())) return true;
  }
  return false;
}
}  // namespace

Result<bool> prepare_runtime_parent(const std::string& dir) {
  // The documentation promises 0700 for what the wrapper creates.
  if (auto made = create_missing_dirs(dir); !made) return made;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return Error{"cannot stat " + dir + ": " + std::strerror(errno)};
  if (S_ISLNK(st.st_mode)) return Error{"directory " + dir + " is a symlink; refusing to use it"};
  if (!S_ISDIR(st.st_mode)) return Error{dir + " is not a directory"};
  // Anyone may create entries in a sticky directory such as /tmp, but only
  // the owner can remove or rename them: our mkdtemp child is safe there.
  if (st.st_uid != ::geteuid() && (st.st_mode & S_ISVTX) == 0) {
    return Error{"directory " + dir + " is owned by uid " + std::to_string(st.st_uid) + ", not by this process's uid " +
                 std::to_string(::geteuid()) + ", and is not sticky"};
  }
  return true;
}

int remove_stale_runtime_dirs(const std::string& parent, const std::string& wrapper_name) {
  const std::string prefix = prefix_for(wrapper_name);
  int removed = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(parent, ec)) {
    std::string base = e.path().filename().string();
    if (base.size() != prefix.size() + kSuffix || base.rfind(prefix, 0) != 0) continue;
    std::string path = e.path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) continue;
    UniqueFd dir = open_dir(path);
    // Locked: a live wrapper uses it. An answering socket: a wrapper that
    // predates the lock does.
    if (!dir || ::flock(dir.get(), LOCK_EX | LOCK_NB) != 0 || holds_answering_socket(path)) continue;
    std::error_code rm;
    std::filesystem::remove_all(path, rm);
    if (rm) {
      log_warn("cannot remove a stale delegate runtime directory", {{"dir", path}, {"error", rm.message()}});
      continue;
    }
    log_info("removed a stale delegate runtime directory", {{"dir", path}});
    removed++;
  }
  return removed;
}

Result<std::unique_ptr<RuntimeDir>> RuntimeDir::create(const std::string& parent_in, const std::string& wrapper_name,
                                                       const std::string& socket_name) {
  std::string parent = parent_in.empty() ? "/tmp" : parent_in;
  auto deep = [&] { return parent.size() + 1 + prefix_for(wrapper_name).size() + kSuffix + 1 + socket_name.size(); };
  // Chained wrappers nest runtime directories; a deep chain falls back to a
  // private directory in /tmp.
  if (deep() > kMaxSocketPath) {
    log_info("delegate runtime directory would be too deep; using /tmp", {{"runtime_dir", parent}});
    parent = "/tmp";
  }
  if (auto ok = prepare_runtime_parent(parent); !ok) return Error{"delegate runtime directory: " + ok.error()};
  std::string path = parent + "/" + prefix_for(wrapper_name) + "XXXXXX";
  if (deep() > kMaxSocketPath) {
    return Error{"delegate socket path " + path + "/" + socket_name +
                 " is too long for a Unix socket; set delegate.runtime_dir"};
  }
  remove_stale_runtime_dirs(parent, wrapper_name);
  if (::mkdtemp(path.data()) == nullptr) {
    return Error{"cannot create delegate runtime directory " + path + ": " + std::strerror(errno)};
  }
  UniqueFd lock = open_dir(path);
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return Error{"cannot lock delegate runtime directory " + path + ": " + std::strerror(err)};
  }
  return std::unique_ptr<RuntimeDir>(new RuntimeDir(std::move(path), std::move(lock)));
}

RuntimeDir::~RuntimeDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace owrap
