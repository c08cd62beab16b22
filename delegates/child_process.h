// One child process, started by spawn_process (no copy of our address
// space): PR_SET_PDEATHSIG so it never outlives the thread that started it,
// in its own process group, with stdout and stderr on non-blocking pipes.
// Reaping is explicit so a pid is never signalled after reuse, and the
// group can still be killed after the leader exited (its helpers keep
// running otherwise).
#pragma once

#include "common/result.h"
#include "common/uds.h"

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace owrap {

struct ExitInfo {
  int code = -1;   // exit code, or -1 when killed by a signal
  int signal = 0;  // terminating signal, or 0
  // A predicate for "it ...": "exited with code 2", "was killed by signal
  // Killed (9)".
  std::string describe() const;
};

struct SpawnOptions {
  // Gives the child a pipe on stdin (take it with take_stdin()) instead of
  // /dev/null.
  bool stdin_pipe = false;
};

class ChildProcess {
 public:
  // Spawns argv[0] (searched in PATH) with exactly `env`. A program that
  // cannot be executed (missing, not executable, a bad interpreter) is an
  // error here, not a child exiting 127.
  static Result<std::unique_ptr<ChildProcess>> spawn(const std::vector<std::string>& argv,
                                                     const std::map<std::string, std::string>& env,
                                                     SpawnOptions options = {});
  ~ChildProcess();  // kills (SIGKILL) and reaps if still running

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_.get(); }
  int stderr_fd() const { return err_.get(); }
  // The pipe ends (non-blocking, close-on-exec), for a caller that reads
  // and writes them itself (an event loop); stdout_fd()/stderr_fd() are -1
  // afterwards. take_stdin() is empty unless SpawnOptions::stdin_pipe.
  UniqueFd take_stdin() { return std::move(in_); }
  UniqueFd take_stdout() { return std::move(out_); }
  UniqueFd take_stderr() { return std::move(err_); }
  // Readable once the process exited (not owned; -1 on kernels without
  // pidfd_open): lets an event loop wait for this one child, never for
  // "any child", so nobody else's exit status is ever consumed.
  int pidfd() const { return pidfd_.get(); }

  // Blocks until the process has exited, without reaping it.
  void wait_exited();
  // Waits up to `timeout` (forever when negative) for the process to exit,
  // or for `wake_fd` (if >= 0) to become readable. True once it exited; not
  // reaped.
  bool wait_exited_for(std::chrono::milliseconds timeout, int wake_fd = -1);
  // True once the process has exited (not reaped).
  bool exited();
  // Reaps an exited process and returns how it ended.
  ExitInfo reap();
  // Signals the whole process group (and the process, if it left it), once
  // each, unless already reaped.
  void signal(int sig);

 private:
  ChildProcess(pid_t pid, UniqueFd in, UniqueFd out, UniqueFd err);
  std::mutex mu_;
  pid_t pid_;
  bool reaped_ = false;
  UniqueFd in_, out_, err_;
  UniqueFd pidfd_;  // readable once the process exited; empty on kernels without pidfd_open
};

}  // namespace owrap
