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

// Under a sanitizer, whose interceptors (sigaction, dup2, ...) keep state
// in our memory, the child must not share it: a plain fork, as before.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kShareMemory = false;
#else
constexpr bool kShareMemory = true;
#endif

// What the child did not manage, written on the status pipe: the parent
// reads it once the child executed (EOF: the pipe is close-on-exec) or
// exited.
struct ChildFailure {
  int step = -1;
  int error = 0;
};
constexpr const char* kSteps[] = {"prctl", "setpgid", "dup2", "execve"};
enum Step { kPrctl, kSetpgid, kDup2, kExecve };

struct ChildArgs {
  const ExecImage* image;
  int fds[3];
  int status_fd;
  pid_t parent;
  int max_fd;  // for closing without close_range (kernels before 5.11)
};

[[noreturn]] void child_failed(const ChildArgs* a, Step step) {
  ChildFailure failure{step, errno};
  (void)!::write(a->status_fd, &failure, sizeof failure);
  ::_exit(127);
}

// Everything but 0, 1, 2 closed at exec; the status pipe must stay open
// until then.
void close_others_on_exec(const ChildArgs* a) {
  if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  for (int fd = 3; fd < a->max_fd; fd++) {
    if (fd != a->status_fd) ::close(fd);
  }
}

// In the child, possibly on its own stack in our memory: system calls only
// (no allocation, no locks), and every signal blocked until the
// dispositions are the defaults.
int child_main(void* arg) {
  const auto* a = static_cast<const ChildArgs*>(arg);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);  // glibc's own two: EINVAL, harmless
  }
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_failed(a, kPrctl);
  if (::getppid() != a->parent) ::_exit(127);  // the starting thread is gone already
  if (::setpgid(0, 0) != 0) child_failed(a, kSetpgid);
  for (int target = 0; target < 3; target++) {
    if (::dup2(a->fds[target], target) < 0) child_failed(a, kDup2);
  }
  close_others_on_exec(a);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(a->image->program().c_str(), a->image->argv(), a->image->envp());
  child_failed(a, kExecve);
}

pid_t start_child(ChildArgs& args) {
  if constexpr (kShareMemory) {
    thread_local ChildStack stack;
    if (stack.top() == nullptr) {
      errno = ENOMEM;
      return -1;
    }
    return ::clone(child_main, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  }
  pid_t pid = ::fork();
  if (pid == 0) child_main(&args);
  return pid;
}

// The child's failure, or none once it executed.
ChildFailure read_failure(UniqueFd status) {
  ChildFailure failure;
  ssize_t n;
  while ((n = ::read(status.get(), &failure, sizeof failure)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof failure) || failure.step < kPrctl || failure.step > kExecve) return {};
  return failure;
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

std::string exec_failure(const ExecImage& image, ChildFailure failure) {
  std::string message = "cannot execute \"" + image.program() + "\": ";
  if (failure.step != kExecve) return message + kSteps[failure.step] + ": " + std::strerror(failure.error);
  message += std::strerror(failure.error);
  // The file was there when we looked (resolve_program): what is missing is
  // what it names, its #! interpreter or dynamic loader.
  if (failure.error == ENOENT) message += " (its interpreter?)";
  return message;
}

}  // namespace

Result<pid_t> spawn_process(const ExecImage& image, ChildFds fds) {
  UniqueFd dev_null;
  if (fds.in < 0) {
    dev_null.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!dev_null) return Error{std::string("/dev/null: ") + std::strerror(errno)};
    fds.in = dev_null.get();
  }
  int status[2];
  if (::pipe2(status, O_CLOEXEC) != 0) return Error{std::string("pipe: ") + std::strerror(errno)};
  UniqueFd status_read(status[0]), status_write(status[1]);
  ChildArgs args{.image = &image,
                 .fds = {fds.in, fds.out, fds.err},
                 .status_fd = status_write.get(),
                 .parent = ::getpid(),
                 .max_fd = fd_limit()};
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
    pid = start_child(args);
  }
  if (pid < 0) return Error{std::string("cannot start a process: ") + std::strerror(errno)};
  status_write.reset();  // EOF once the child executed or exited
  if (auto failure = read_failure(std::move(status_read)); failure.step >= 0) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return Error{exec_failure(image, failure)};
  }
  return pid;
}

}  // namespace owrap
