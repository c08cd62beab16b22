#include "delegates/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

namespace owrap {

std::string ExitInfo::describe() const {
  if (signal != 0)
    return std::string("was killed by signal ") + strsignal(signal) + " (" + std::to_string(signal) + ")";
  return "exited with code " + std::to_string(code);
}

Result<std::unique_ptr<ChildProcess>> ChildProcess::spawn(const std::vector<std::string>& argv,
                                                          const std::map<std::string, std::string>& env) {
  if (argv.empty()) return Error{"empty command"};
  // Everything the child needs is built before fork: after fork, only
  // async-signal-safe calls are allowed.
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (auto& e : env_strings) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  std::string path_env;
  if (auto it = env.find("PATH"); it != env.end())
    path_env = it->second;
  else if (const char* p = std::getenv("PATH"))
    path_env = p;
  else
    path_env = "/usr/local/bin:/usr/bin:/bin";
  // Resolve the program in the parent: execvpe would consult our PATH anyway.
  std::string program = argv[0];
  if (program.find('/') == std::string::npos) {
    size_t start = 0;
    while (start <= path_env.size()) {
      size_t end = path_env.find(':', start);
      std::string dir = path_env.substr(start, end == std::string::npos ? std::string::npos : end - start);
      std::string candidate = (dir.empty() ? "." : dir) + "/" + argv[0];
      if (::access(candidate.c_str(), X_OK) == 0) {
        program = candidate;
        break;
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
    if (program.find('/') == std::string::npos) return Error{"command \"" + argv[0] + "\" not found in PATH"};
  } else if (::access(program.c_str(), X_OK) != 0) {
    return Error{"command \"" + program + "\" is not executable: " + std::strerror(errno)};
  }

  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error{std::string("pipe: ") + std::strerror(errno)};
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return Error{std::string("pipe: ") + std::strerror(errno)};
  }
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    return Error{std::string("fork: ") + std::strerror(e)};
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execve(program.c_str(), cargv.data(), cenv.data());
    const char msg[] = "exec failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, UniqueFd(out[0]), UniqueFd(err[0])));
}

ChildProcess::ChildProcess(pid_t pid, UniqueFd out, UniqueFd err)
    : pid_(pid), out_(std::move(out)), err_(std::move(err)) {
  // Reading stops when asked, even if a helper still holds the write end.
  for (int fd : {out_.get(), err_.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
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
