#include "common/uds.h"

#include "common/log.h"

#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace owrap {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

Result<sockaddr_un> make_addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Error{"socket path \"" + path + "\" must be 1 to " + std::to_string(sizeof(addr.sun_path) - 1) + " bytes"};
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

std::string socket_path_error(const std::string& path) {
  constexpr size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  if (path.empty()) return "must not be empty";
  if (path.find('\0') != std::string::npos) return "must not contain a NUL byte";
  if (path.front() != '/') return "\"" + path + "\" must be an absolute path";
  if (path.size() > kMax) {
    return "\"" + path + "\" is " + std::to_string(path.size()) + " bytes; a Unix socket path has at most " +
           std::to_string(kMax);
  }
  return {};
}

namespace {

// An existing directory the wrapper may keep a socket in. It never changes
// the mode of a directory it did not create: chmod on /tmp (or any shared
// directory) would break every other user of it.
Result<bool> check_existing_private_dir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return Error{"cannot stat " + dir + ": " + errno_text(errno)};
  if (S_ISLNK(st.st_mode)) return Error{"directory " + dir + " is a symlink; refusing to use it"};
  if (!S_ISDIR(st.st_mode)) return Error{dir + " is not a directory"};
  if (st.st_uid != ::geteuid()) {
    return Error{"directory " + dir + " is owned by uid " + std::to_string(st.st_uid) + ", not by this process's uid " +
                 std::to_string(::geteuid()) + "; use a private directory such as /run/openshell"};
  }
  if ((st.st_mode & (S_ISVTX | S_IWOTH | S_IWGRP)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return Error{"directory " + dir + " (mode " + mode +
                 ") is shared: others can write to it, so they could replace the socket; the wrapper does not "
                 "change the mode of a directory it did not create. Use a private directory such as /run/openshell"};
  }
  return true;
}

}  // namespace

Result<bool> create_missing_dirs(const std::string& dir) {
  // Every directory we create on the way is ours: private whatever the
  // umask says (mkdir's mode is masked; chmod is not). Existing ones are
  // never touched.
  std::error_code ec;
  std::filesystem::path built;
  for (const auto& part : std::filesystem::path(dir)) {
    built /= part;
    if (std::filesystem::exists(std::filesystem::symlink_status(built, ec))) continue;
    if (::mkdir(built.c_str(), 0700) != 0 && errno != EEXIST) {
      return Error{"cannot create directory " + built.string() + ": " + errno_text(errno)};
    }
    if (::chmod(built.c_str(), 0700) != 0)
      return Error{"cannot chmod 0700 " + built.string() + ": " + errno_text(errno)};
  }
  return true;
}

Result<bool> ensure_private_dir(const std::string& dir) {
  if (auto made = create_missing_dirs(dir); !made) return made;
  return check_existing_private_dir(dir);
}

Result<UniqueFd> connect_unix(const std::string& path, bool nonblocking) {
  auto addr = make_addr(path);
  if (!addr) return Error{addr.error()};
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd) return Error{"socket(): " + errno_text(errno)};
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr.value()), sizeof(sockaddr_un)) != 0) {
    return Error{"connect " + path + ": " + errno_text(errno)};
  }
  return fd;
}

bool socket_answers(const std::string& path) {
  return connect_unix(path, false).ok();
}

namespace {

// What is at `path` now may be replaced by our socket: nothing, or a stale
// socket of ours nobody answers on.
Result<bool> check_path_free(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return true;
    return Error{"cannot stat " + path + ": " + errno_text(errno)};
  }
  if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) {
    return Error{"socket path " + path + " exists but is not an owned Unix socket"};
  }
  if (socket_answers(path)) {
    return Error{"socket path " + path + " is in use: a live server answers on it; refusing to steal it"};
  }
  return true;
}

}  // namespace

Result<bool> GuardedSocket::check(const std::string& path) {
  if (std::string e = socket_path_error(path); !e.empty()) return Error{"socket path: " + e};
  std::string dir = std::filesystem::path(path).parent_path().string();
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::symlink_status(dir, ec))) {
    if (auto ok = check_existing_private_dir(dir); !ok) return ok;
  }
  return check_path_free(path);
}

Result<std::unique_ptr<GuardedSocket>> GuardedSocket::bind(const std::string& path) {
  if (std::string e = socket_path_error(path); !e.empty()) return Error{"socket path: " + e};
  auto addr = make_addr(path);
  if (!addr) return Error{addr.error()};
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (auto ok = ensure_private_dir(dir); !ok) return Error{ok.error()};
  if (auto ok = check_path_free(path); !ok) return Error{ok.error()};
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error{"cannot remove stale socket " + path + ": " + errno_text(errno)};
  }

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Error{"socket(): " + errno_text(errno)};
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr.value()), sizeof(sockaddr_un)) != 0) {
    return Error{"cannot bind " + path + ": " + errno_text(errno)};
  }
  if (::chmod(path.c_str(), 0600) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return Error{"cannot chmod 0600 " + path + ": " + errno_text(err)};
  }
  if (::listen(fd.get(), 128) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return Error{"cannot listen on " + path + ": " + errno_text(err)};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Error{"cannot stat " + path + ": " + errno_text(errno)};
  return std::unique_ptr<GuardedSocket>(new GuardedSocket(path, std::move(fd), st.st_dev, st.st_ino));
}

GuardedSocket::~GuardedSocket() {
  fd_.reset();
  // Only remove the file if it is still the one we bound: a successor may
  // already have replaced it.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
}

PeerCheckedAcceptor::PeerCheckedAcceptor(GuardedSocket& socket, grpc::Server* server, std::string who,
                                         ConnectionHandoff handoff)
    : socket_(socket),
      server_(server),
      who_(std::move(who)),
      handoff_(std::move(handoff)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

PeerCheckedAcceptor::~PeerCheckedAcceptor() {
  stop();
}

void PeerCheckedAcceptor::start() {
  thread_ = std::thread([this] { run(); });
}

void PeerCheckedAcceptor::stop() {
  stopping_ = true;
  uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void PeerCheckedAcceptor::run() {
  const uid_t self = ::geteuid();
  while (!stopping_) {
    pollfd fds[2] = {{socket_.fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      log_error("accept loop poll failed", {{"error", errno_text(errno)}, {"socket", socket_.path()}});
      return;
    }
    if (fds[1].revents != 0 || stopping_) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    UniqueFd conn(::accept4(socket_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        log_warn("accept failed", {{"error", errno_text(errno)}, {"socket", socket_.path()}});
        // Out of fds or similar: back off instead of spinning.
        ::usleep(50 * 1000);
      }
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      refused_++;
      log_warn("dropping connection: cannot read peer credentials",
               {{"error", errno_text(errno)}, {"socket", socket_.path()}});
      continue;
    }
    if (cred.uid != self) {
      refused_++;
      log_warn("dropping connection from a foreign uid",
               {{"peer_uid", cred.uid}, {"peer_pid", cred.pid}, {"expected_uid", self}, {"socket", socket_.path()}});
      continue;
    }
    if (handoff_) {
      handoff_(std::move(conn));
      continue;
    }
    // gRPC needs the fd non-blocking (set by accept4), or the connection hangs.
    grpc::AddInsecureChannelFromFd(server_, conn.release());
  }
}

}  // namespace owrap
