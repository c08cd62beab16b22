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
#include <cstdlib>
#include <cstring>

namespace owrap {

std::string ExitInfo::describe() const {
  if (signal != 0)
    return std::string("was killed by signal ") + strsignal(signal) + " (" + std::to_string(signal) + ")";
  return "exited with code " + std::to_string(code);
}

namespace {

// argv[0] as execve wants it: searched in the child's PATH (ours when it
// has none) in the parent, since execvpe would consult our PATH anyway.
Result<std::string> resolve_program(const std::string& name, const std::map<std::string, std::string>& env) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) != 0)
      return Error{"command \"" + name + "\" is not executable: " + std::strerror(errno)};
    return name;
  }
  std::string path_env;
  if (auto it = env.find("PATH"); it != env.end())
    path_env = it->second;
  else if (const char* p = std::getenv("PATH"))
    path_env = p;
  else
    path_env = "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path_env.size()) {
    size_t end = path_env.find(':', start);
    std::string dir = path_env.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return Error{"command \"" + name + "\" not found in PATH"};
}

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

// What the child needs, built before fork: after fork only
// async-signal-safe calls are allowed.
struct ExecImage {
  std::string program;
  std::vector<std::string> env_strings;
  std::vector<char*> argv, envp;

  ExecImage(std::string prog, const std::vector<std::string>& args, const std::map<std::string, std::string>& env)
      : program(std::move(prog)) {
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
};

// In the child, after fork. execve's errno goes to `status_fd` (closed on a
// successful exec), so the parent tells "could not execute" from "ran".
[[noreturn]] void exec_child(const ExecImage& image, pid_t parent, int stdin_fd, int out_fd, int err_fd,
                             int status_fd) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  if (stdin_fd < 0) stdin_fd = ::open("/dev/null", O_RDONLY);
  if (stdin_fd >= 0) ::dup2(stdin_fd, 0);
  ::dup2(out_fd, 1);
  ::dup2(err_fd, 2);
  ::execve(image.program.c_str(), image.argv.data(), image.envp.data());
  int e = errno;
  (void)!::write(status_fd, &e, sizeof e);
  ::_exit(127);
}

// The child's execve errno, or 0 once it executed (the pipe closed).
int exec_errno(UniqueFd status_read) {
  int e = 0;
  ssize_t n;
  while ((n = ::read(status_read.get(), &e, sizeof e)) < 0 && errno == EINTR) {
  }
  return n == static_cast<ssize_t>(sizeof e) ? e : 0;
}

}  // namespace

Result<std::unique_ptr<ChildProcess>> ChildProcess::spawn(const std::vector<std::string>& argv,
                                                          const std::map<std::string, std::string>& env,
                                                          SpawnOptions options) {
  if (argv.empty()) return Error{"empty command"};
  auto program = resolve_program(argv[0], env);
  if (!program) return Error{program.error()};
  ExecImage image(program.value(), argv, env);
  Pipe in, out, err, status;
  if ((options.stdin_pipe && !in.open()) || !out.open() || !err.open() || !status.open())
    return Error{std::string("pipe: ") + std::strerror(errno)};
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Error{std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) exec_child(image, parent, in.fd[0].get(), out.fd[1].get(), err.fd[1].get(), status.fd[1].get());
  // Only the child's copies of the write ends may remain, so EOF means it
  // executed or exited.
  in.fd[0].reset();
  out.fd[1].reset();
  err.fd[1].reset();
  status.fd[1].reset();
  if (int e = exec_errno(std::move(status.fd[0])); e != 0) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return Error{"cannot execute \"" + image.program + "\": " + std::strerror(e)};
  }
  return std::unique_ptr<ChildProcess>(
      new ChildProcess(pid, std::move(in.fd[1]), std::move(out.fd[0]), std::move(err.fd[0])));
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
