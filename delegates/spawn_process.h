// Starts a program without copying the wrapper's address space: the child
// is a clone(CLONE_VM | CLONE_VFORK) that shares our memory (on a small stack
// of its own) until it executes, as glibc's posix_spawn does. fork() copies
// the page tables of a large multi-threaded process and write-locks its
// mappings meanwhile, stalling every other thread's page faults; this does
// neither, and the calling thread waits only until the child executed.
//
// It is not posix_spawn because the child must also set PR_SET_PDEATHSIG
// (SIGKILL when the thread that started it ends), which posix_spawn cannot
// do: hooks and delegates never outlive the wrapper. Under a sanitizer it
// is a plain fork (the interceptors keep state in our memory).
//
// The child: PR_SET_PDEATHSIG, a process group of its own, every signal at
// its default action and none blocked, stdin/stdout/stderr from `fds`, no
// other file descriptor, exactly `envp`.
#pragma once

#include "common/result.h"

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace owrap {

// argv and the environment as execve wants them, built before spawning: the
// child may only make system calls.
class ExecImage {
 public:
  ExecImage(std::string program, const std::vector<std::string>& args, const std::map<std::string, std::string>& env);
  ExecImage(const ExecImage&) = delete;
  ExecImage& operator=(const ExecImage&) = delete;

  const std::string& program() const { return program_; }
  char* const* argv() const { return argv_.data(); }
  char* const* envp() const { return envp_.data(); }

 private:
  std::string program_;
  std::vector<std::string> args_, env_strings_;
  std::vector<char*> argv_, envp_;
};

// argv[0] as execve wants it: searched in the child's PATH (ours when it has
// none), in the parent. A name with a slash must be executable as it is.
Result<std::string> resolve_program(const std::string& name, const std::map<std::string, std::string>& env);

// The descriptors that become the child's 0, 1 and 2 (any fd, close-on-exec
// or not); -1 for stdin means /dev/null.
struct ChildFds {
  int in = -1, out = -1, err = -1;
};

// Starts `image`; returns the child's pid once it executed. A program that
// could not be executed (execve failed: a missing #! interpreter, a
// directory, ...) is an error naming it, and the child is reaped already.
Result<pid_t> spawn_process(const ExecImage& image, ChildFds fds);

}  // namespace owrap
