// The wrapper's socket is guarded at least as strictly as upstream drivers'.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <csignal>
#include <cstring>
#include <filesystem>

using namespace owrap::test;
using Catch::Contains;

TEST_CASE("socket and directory modes; removed on exit", "[e2e][socket]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  struct stat st {};
  REQUIRE(::lstat(one.socket.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  std::string parent = std::filesystem::path(one.socket).parent_path();
  REQUIRE(::lstat(parent.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  one.proc->signal(SIGTERM);
  CHECK(one.proc->wait() == 0);
  CHECK_FALSE(std::filesystem::exists(one.socket));
  // The delegate's private runtime directory is gone too.
  for (const auto& e : std::filesystem::directory_iterator(parent)) {
    CHECK(e.path().filename().string().find("delegate") == std::string::npos);
  }
}

TEST_CASE("a connection from another uid is refused", "[e2e][socket]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  // Simulate an operator's chmod mistake so `nobody` can reach the socket at
  // all: the SO_PEERCRED check must still refuse it.
  std::string parent = std::filesystem::path(one.socket).parent_path();
  ::chmod(dir.path().c_str(), 0755);
  ::chmod(parent.c_str(), 0777);
  ::chmod(one.socket.c_str(), 0777);
  std::string out, err;
  int rc =
      run_command({wrapper_bin(), "ctl", "--socket", one.socket, "--timeout", "3s", "caps"}, &out, &err, {}, "nobody");
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("UNAVAILABLE"));
  CHECK(out.empty());
  CHECK(wait_for([&] { return one.proc->log().find("dropping connection from a foreign uid") != std::string::npos; }));
  CHECK_THAT(one.proc->log(), Contains("\"peer_uid\":65534"));
  // Our own uid still gets in.
  rc = run_command({wrapper_bin(), "ctl", "--socket", one.socket, "caps"}, &out, &err);
  CHECK(rc == 0);
  CHECK_THAT(out, Contains("\"driver_name\":\"acme\""));
}

TEST_CASE("a live socket is not stolen; a stale one is replaced", "[e2e][socket]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  Process second({wrapper_bin(), "run", "--config", one.config}, dir.file("second.log"));
  CHECK(second.wait() == 1);
  CHECK_THAT(second.log(), Contains("is in use: a live server answers on it"));
  CHECK(wait_for_socket(one.socket));  // the first one still serves

  // A stale socket: bound once, nobody listening.
  std::string stale_dir = dir.file("stale");
  std::filesystem::create_directories(stale_dir);
  ::chmod(stale_dir.c_str(), 0700);
  std::string stale = stale_dir + "/acme.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, stale.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  ::close(fd);
  Process third({wrapper_bin(), "run", "--config", one.config, "--bind-socket", stale}, dir.file("third.log"));
  CHECK(wait_for_socket(stale));
}

TEST_CASE("symlinked directories and foreign files are refused", "[e2e][socket]") {
  TempDir dir;
  std::filesystem::create_directories(dir.file("real"));
  std::filesystem::create_directory_symlink(dir.file("real"), dir.file("link"));
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("link/acme.sock")));
  Process linked({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("linked.log"));
  CHECK(linked.wait() == 1);
  CHECK_THAT(linked.log(), Contains("is a symlink"));

  write_file(dir.file("real/acme.sock"), "not a socket");
  Process foreign({wrapper_bin(), "run", "--config", dir.file("w.toml"), "--bind-socket", dir.file("real/acme.sock")},
                  dir.file("foreign.log"));
  CHECK(foreign.wait() == 1);
  CHECK_THAT(foreign.log(), Contains("exists but is not an owned Unix socket"));
}

namespace {
mode_t mode_of(const std::string& path) {
  struct stat st {};
  ::lstat(path.c_str(), &st);
  return st.st_mode & 07777;
}
}  // namespace

TEST_CASE("a shared directory is never chmodded; socket paths must be absolute", "[e2e][socket][defects]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  // A stand-in for /tmp: world-writable and sticky.
  std::string shared = dir.file("shared");
  std::filesystem::create_directories(shared);
  ::chmod(shared.c_str(), 01777);
  write_file(dir.file("w.toml"), wrapper_toml(spec, shared + "/acme.sock"));
  Process in_shared({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("shared.log"));
  CHECK(in_shared.wait() == 1);
  CHECK(mode_of(shared) == 01777);
  CHECK_THAT(in_shared.log(), Contains("is shared") && Contains("/run/openshell"));
  CHECK_THAT(in_shared.log(), !Contains("delegate started"));

  // An existing private-enough directory keeps its mode too.
  std::string readable = dir.file("readable");
  std::filesystem::create_directories(readable);
  ::chmod(readable.c_str(), 0755);
  write_file(dir.file("r.toml"), wrapper_toml(spec, readable + "/acme.sock"));
  Process in_readable({wrapper_bin(), "run", "--config", dir.file("r.toml")}, dir.file("readable.log"));
  CHECK(wait_for_socket(readable + "/acme.sock"));
  CHECK(mode_of(readable) == 0755);
  CHECK(mode_of(readable + "/acme.sock") == 0600);

  // Directories the wrapper creates on the way are private, whatever the umask.
  std::string deep = dir.file("new/deeper/acme.sock");
  write_file(dir.file("d.toml"), wrapper_toml(spec, deep));
  mode_t old_mask = ::umask(022);
  Process in_new({wrapper_bin(), "run", "--config", dir.file("d.toml")}, dir.file("new.log"));
  ::umask(old_mask);
  CHECK(wait_for_socket(deep));
  CHECK(mode_of(dir.file("new")) == 0700);
  CHECK(mode_of(dir.file("new/deeper")) == 0700);

  // Relative paths: in the file and on the command line.
  write_file(dir.file("rel.toml"), wrapper_toml(spec, "run/acme.sock"));
  std::string out, err;
  CHECK(run_command({wrapper_bin(), "check-config", dir.file("rel.toml")}, &out, &err) == 1);
  CHECK_THAT(err, Contains("wrapper.socket: \"run/acme.sock\" must be an absolute path"));
  Process relative({wrapper_bin(), "run", "--config", dir.file("w.toml"), "--bind-socket", "acme.sock"},
                   dir.file("relative.log"));
  CHECK(relative.wait() == 2);
  CHECK_THAT(relative.log(), Contains("--bind-socket: \\\"acme.sock\\\" must be an absolute path"));
}

TEST_CASE("the serving path is checked before the delegate is launched", "[e2e][socket][defects]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  // A second wrapper on the live socket: refused at once, no base driver launched.
  auto started = std::chrono::steady_clock::now();
  Process second({wrapper_bin(), "run", "--config", one.config}, dir.file("second.log"));
  CHECK(second.wait() == 1);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(3));
  CHECK_THAT(second.log(), Contains("is in use") && !Contains("delegate started"));
  // A path too long for a Unix socket.
  std::string deep = dir.path() + "/" + std::string(120, 'd') + "/acme.sock";
  Process too_long({wrapper_bin(), "run", "--config", one.config, "--bind-socket", deep}, dir.file("long.log"));
  CHECK(too_long.wait() == 2);
  CHECK_THAT(too_long.log(), Contains("a Unix socket path has at most 107") && !Contains("delegate started"));
  // A NUL inside the configured path would bind a truncated one.
  write_file(dir.file("nul.toml"), "[wrapper]\nname = \"acme\"\nsocket = \"" + dir.path() +
                                       "/a\\u0000b.sock\"\n[delegate]\nname = \"memory\"\n" + "command = [\"" +
                                       memory_bin() + "\", \"--bind-socket\", \"{socket}\"]\n");
  std::string out, err;
  CHECK(run_command({wrapper_bin(), "check-config", dir.file("nul.toml")}, &out, &err) == 1);
  CHECK_THAT(err, Contains("wrapper.socket: must not contain a NUL byte"));
}
