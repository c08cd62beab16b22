#include "delegates/spawn_process.h"

#include "common/uds.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

namespace owrap {

ExecImage::ExecImage(std::string program, const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env)
    : program_(std::move(program)), args_(args) {
  for (const auto& [k, v] : env) env_strings_.push_back(k + "=" + v);
  for (auto& a : args_) argv_.push_back(a.data());
  argv_.push_back(nullptr);
  for (auto& e : env_strings_) envp_.push_back(e.data());
  envp_.push_back(nullptr);
}

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

namespace {

// The child's stack until it executes, one per thread: the thread that
// clones waits until then, so it never has two children on it. Kept for the
// thread's life, since unmapping would flush the TLB of every CPU running
// one of our threads. The lowest page is a guard.
class ChildStack {
 public:
  static constexpr size_t kSize = 64 * 1024;
  ChildStack() {
    void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<char*>(p);
    ::mprotect(base_, static_cast<size_t>(::sysconf(_SC_PAGESIZE)), PROT_NONE);
  }
  ~ChildStack() {
    if (base_ != nullptr) ::munmap(base_, kSize);
  }
  ChildStack(const ChildStack&) = delete;
  ChildStack& operator=(const ChildStack&) = delete;
  // The stack grows down on every architecture Debian builds us for.
  void* top() const { return base_ == nullptr ? nullptr : base_ + kSize; }

 private:
  char* base_ = nullptr;
};

// Blocks every signal in this thread while it lasts: a handler must not run
// in the child, which shares our memory, before it reset the dispositions.
// (glibc keeps its two internal signals, used for pthread_cancel and
// setuid across threads, out of the mask; the wrapper uses neither.)
class BlockAllSignals {
 public:
  BlockAllSignals() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
  }
  ~BlockAllSignals() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  BlockAllSignals(const BlockAllSignals&) = delete;
  BlockAllSignals& operator=(const BlockAllSignals&) = delete;

 private:
  sigset_t saved_;
};

// Shared with the child, which writes `error` and `step` when it cannot
// execute; the parent reads them once the child exited.
struct ChildArgs {
  const ExecImage* image;
  int fds[3];
  pid_t parent;
  int max_fd;  // for closing without close_range (kernels before 5.9)
  volatile int error = 0;
  const char* volatile step = nullptr;
};

[[noreturn]] void child_failed(ChildArgs* a, const char* step) {
  a->error = errno;
  a->step = step;
  ::_exit(127);
}

// In the child, on its own stack in our memory: system calls only (no
// allocation, no locks), and every signal blocked until the dispositions
// are the defaults.
int child_main(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);  // glibc's own two: EINVAL, harmless
  }
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_failed(a, "prctl");
  if (::getppid() != a->parent) ::_exit(127);  // the starting thread is gone already
  if (::setpgid(0, 0) != 0) child_failed(a, "setpgid");
  for (int target = 0; target < 3; target++) {
    if (::dup2(a->fds[target], target) < 0) child_failed(a, "dup2");
  }
  if (::close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < a->max_fd; fd++) ::close(fd);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(a->image->program().c_str(), a->image->argv(), a->image->envp());
  child_failed(a, "execve");
}

// A copy at 3 or above of `fd`, when it is 0, 1 or 2, so that placing one
// of the child's descriptors never overwrites another not yet placed (and
// dup2 onto itself, which would keep close-on-exec, never happens).
Result<UniqueFd> above_stdio(int fd) {
  if (fd > 2) return UniqueFd();
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return Error{std::string("fcntl: ") + std::strerror(errno)};
  return UniqueFd(copy);
}

int fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 65536;
  return static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 20));
}

std::string exec_failure(const ExecImage& image, const char* step, int error) {
  std::string message = "cannot execute \"" + image.program() + "\": ";
  if (std::strcmp(step, "execve") != 0) return message + step + ": " + std::strerror(error);
  message += std::strerror(error);
  // The file was there when we looked (resolve_program): what is missing is
  // what it names, its #! interpreter or dynamic loader.
  if (error == ENOENT) message += " (its interpreter?)";
  return message;
}

}  // namespace

Result<pid_t> spawn_process(const ExecImage& image, ChildFds fds) {
  thread_local ChildStack stack;
  if (stack.top() == nullptr) return Error{std::string("cannot map a stack for the child: ") + std::strerror(ENOMEM)};
  UniqueFd dev_null;
  if (fds.in < 0) {
    dev_null.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!dev_null) return Error{std::string("/dev/null: ") + std::strerror(errno)};
    fds.in = dev_null.get();
  }
  ChildArgs args{.image = &image, .fds = {fds.in, fds.out, fds.err}, .parent = ::getpid(), .max_fd = fd_limit()};
  UniqueFd moved[3];
  for (int i = 0; i < 3; i++) {
    auto copy = above_stdio(args.fds[i]);
    if (!copy) return Error{copy.error()};
    moved[i] = std::move(copy.value());
    if (moved[i]) args.fds[i] = moved[i].get();
  }
  pid_t pid;
  {
    BlockAllSignals blocked;
    pid = ::clone(child_main, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  }
  if (pid < 0) return Error{std::string("clone: ") + std::strerror(errno)};
  if (args.step != nullptr) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return Error{exec_failure(image, args.step, args.error)};
  }
  return pid;
}

}  // namespace owrap
