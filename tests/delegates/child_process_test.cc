// ChildProcess::spawn (delegates/spawn_process.h): what a child gets besides
// its command, checked on real processes.
#include "delegates/child_process.h"

#include "support/harness.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

using namespace owrap;
using namespace owrap::test;
using namespace std::chrono_literals;

TEST_CASE("a child is killed when the thread that started it ends (PR_SET_PDEATHSIG)", "[child_process]") {
  // posix_spawn cannot give this: the reason spawn_process clones itself.
  std::unique_ptr<ChildProcess> child;
  std::thread starter([&] {
    auto spawned = ChildProcess::spawn({"/bin/sleep", "60"}, {});
    if (spawned) child = std::move(spawned.value());
  });
  starter.join();
  REQUIRE(child);
  CHECK(child->wait_exited_for(10s));
  auto exit = child->reap();
  CHECK(exit.signal == SIGKILL);
}

TEST_CASE("a command that fails at execve is a spawn error naming it, and leaves no child", "[child_process]") {
  TempDir dir;
  // Both pass the access() check in the parent: only execve can tell.
  std::string directory = dir.file("a-directory");
  ::mkdir(directory.c_str(), 0755);
  std::string bad_interpreter = dir.file("bad.sh");
  write_file(bad_interpreter, "#!/nonexistent/interpreter\n");
  ::chmod(bad_interpreter.c_str(), 0755);
  for (const auto& [command, reason] : std::vector<std::pair<std::string, std::string>>{
           {directory, "Permission denied"}, {bad_interpreter, "No such file or directory (its interpreter?)"}}) {
    auto spawned = ChildProcess::spawn({command}, {});
    REQUIRE_FALSE(spawned);
    CHECK(spawned.error() == "cannot execute \"" + command + "\": " + reason);
  }
  std::string missing = dir.file("missing");
  auto spawned = ChildProcess::spawn({missing}, {});
  REQUIRE_FALSE(spawned);
  CHECK(spawned.error() == "command \"" + missing + "\" is not executable: No such file or directory");
  // Every failed child was reaped already.
  CHECK(::waitpid(-1, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}

TEST_CASE("a child's stdout and stderr are its pipes, and stdin is /dev/null without a stdin pipe", "[child_process]") {
  auto spawned =
      ChildProcess::spawn({"/bin/sh", "-c", "echo out; echo err >&2; readlink /proc/$$/fd/0 >&2; cat; echo done"}, {});
  REQUIRE(spawned);
  auto& child = *spawned.value();
  child.wait_exited();
  CHECK(child.reap().code == 0);
  auto drain = [](int fd) {
    std::string text;
    char buf[256];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
    return text;
  };
  CHECK(drain(child.stdout_fd()) == "out\ndone\n");
  CHECK(drain(child.stderr_fd()) == "err\n/dev/null\n");
}
