// One invocation of an exec hook: waits for a slot, runs one process (its
// own process group), writes the request on its stdin, reads its reply on
// stdout and its stderr into the log, and reaps it. Everything happens on
// the io thread: pipes and the pidfd are Asio descriptors, so no thread
// waits for a process, and only this child's pid is ever waited on.
#pragma once

#include "delegates/child_process.h"
#include "hooks/exec_reply.h"
#include "hooks/hook.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace owrap {

// What every invocation of one exec hook shares; immutable.
struct ExecHookConfig {
  std::string hook;
  std::vector<std::string> command;
  // PATH, HOME, LANG from the wrapper's environment and the configured env.
  std::map<std::string, std::string> env;
  size_t max_reply_bytes = 1 << 20;
  int max_in_flight = 16;
};

class ExecInvocation : public std::enable_shared_from_this<ExecInvocation> {
 public:
  using Clock = std::chrono::steady_clock;

  ExecInvocation(boost::asio::io_context& io, std::shared_ptr<const ExecHookConfig> config, std::string request_json,
                 std::map<std::string, std::string> env, Clock::time_point deadline, HookDone done);

  // Io thread, once: arms the deadline and the caller's cancel signal, so a
  // queued invocation ends without ever spawning.
  void watch(CancelSignal& cancel);
  // Io thread, once: spawns the process. `released` runs once the process
  // is reaped (or could not be spawned), when its slot is free again.
  void run(std::function<void()> released);
  // Io thread: kills the process group (if any) and ends with `code`.
  void abort(grpc::StatusCode code, const std::string& message);
  // Io thread, for stop(): abort(), then reaps at once (the process was just
  // SIGKILLed), so nothing of this invocation is left behind.
  void abort_and_reap(const std::string& message);
  bool finished() const { return !done_; }

 private:
  using Descriptor = boost::asio::posix::stream_descriptor;

  void on_deadline();
  static bool adopt(Descriptor& descriptor, UniqueFd fd);
  void release_later();
  void write_request();
  void read_stdout();
  void read_stderr();
  void wait_exit();
  void poll_exit();
  void on_exited();
  void try_complete();
  void close_pipes();
  void finish(HookOutcome outcome);
  std::string budget_text() const;

  std::shared_ptr<const ExecHookConfig> config_;
  std::string request_;
  std::map<std::string, std::string> env_;
  Clock::time_point started_, deadline_;
  HookDone done_;  // empty once finished
  std::function<void()> released_;

  std::unique_ptr<ChildProcess> child_;
  bool running_ = false, exited_ = false, out_eof_ = false, err_eof_ = false;
  Descriptor in_, out_, err_, exit_;
  boost::asio::steady_timer deadline_timer_, exit_timer_;
  std::vector<char> out_chunk_, err_chunk_;  // sized when it runs: queued invocations stay small
  std::string stdout_;
  ExitInfo exit_info_;
  StderrLines stderr_;
};

}  // namespace owrap
