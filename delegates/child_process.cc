#include "delegates/child_process.h"

#include "delegates/spawn_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

namespace owrap {

std::string ExitInfo::describe() const {
  if (signal != 0)
    return std::string("was killed by signal ") + strsignal(signal) + " (" + std::to_string(signal) + ")";
  return "exited with code " + std::to_string(code);
}

namespace {

// A close-on-exec pipe; [0] reads, [1] writes.
struct Pipe {
  UniqueFd fd[2];
  bool open() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return false;
    fd[0].reset(p[0]);
    fd[1].reset(p[1]);
    return true;
  }
};

}  // namespace

Result<std::unique_ptr<ChildProcess>> ChildProcess::spawn(const std::vector<std::string>& argv,
                                                          const std::map<std::string, std::string>& env,
                                                          SpawnOptions options) {
  if (argv.empty()) return Error{"empty command"};
  auto program = resolve_program(argv[0], env);
  if (!program) return Error{program.error()};
  ExecImage image(program.value(), argv, env);
  Pipe in, out, err;
  if ((options.stdin_pipe && !in.open()) || !out.open() || !err.open())
    return Error{std::string("pipe: ") + std::strerror(errno)};
  auto pid = spawn_process(image, {.in = in.fd[0].get(), .out = out.fd[1].get(), .err = err.fd[1].get()});
  if (!pid) return Error{pid.error()};
  // Only the child's copies of the write ends remain, so EOF means it exited
  // (or closed them).
  in.fd[0].reset();
  out.fd[1].reset();
  err.fd[1].reset();
  return std::unique_ptr<ChildProcess>(
      new ChildProcess(pid.value(), std::move(in.fd[1]), std::move(out.fd[0]), std::move(err.fd[0])));
}

ChildProcess::ChildProcess(pid_t pid, UniqueFd in, UniqueFd out, UniqueFd err)
    : pid_(pid), in_(std::move(in)), out_(std::move(out)), err_(std::move(err)) {
  // Reading stops when asked, even if a helper still holds the write end;
  // writing never blocks on a child that does not read.
  for (int fd : {in_.get(), out_.get(), err_.get()}) {
    if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
#ifdef SYS_pidfd_open
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (fd >= 0) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    pidfd_.reset(fd);
  }
#endif
}

ChildProcess::~ChildProcess() {
  signal(SIGKILL);
  if (!reaped_) reap();
}

void ChildProcess::wait_exited() {
  siginfo_t info{};
  while (::waitid(P_PID, pid_, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
}

bool ChildProcess::wait_exited_for(std::chrono::milliseconds timeout, int wake_fd) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (!exited()) {
    int wait_ms = -1;
    if (timeout.count() >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      wait_ms = static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
    }
    // Without a pidfd, look again every 50 ms.
    if (!pidfd_) wait_ms = wait_ms < 0 ? 50 : std::min(wait_ms, 50);
    pollfd fds[2] = {{pidfd_ ? pidfd_.get() : -1, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    int n = ::poll(fds, 2, wait_ms);
    if (n > 0 && fds[1].revents != 0) return exited();
  }
  return true;
}

bool ChildProcess::exited() {
  siginfo_t info{};
  info.si_pid = 0;
  if (::waitid(P_PID, pid_, &info, WEXITED | WNOWAIT | WNOHANG) != 0) return true;
  return info.si_pid != 0;
}

ExitInfo ChildProcess::reap() {
  std::lock_guard<std::mutex> lock(mu_);
  ExitInfo info;
  if (reaped_) return info;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  if (WIFEXITED(status)) info.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) info.signal = WTERMSIG(status);
  return info;
}

void ChildProcess::signal(int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reaped_) return;
  // The group (the process and its helpers), and the process itself only if
  // it left that group: one signal each, since many drivers take a second
  // SIGTERM as "exit now" and skip their graceful shutdown.
  ::kill(-pid_, sig);
  if (::getpgid(pid_) != pid_) ::kill(pid_, sig);
}

}  // namespace owrap
