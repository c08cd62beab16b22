// The signals a long-running service gets, read on one thread of its own
// (signalfd), so no other thread is ever interrupted and every signal is
// logged: SIGTERM and SIGINT ask for shutdown, at any point (start-up
// included); SIGHUP (`systemctl reload`, a closed terminal), SIGUSR1 and
// SIGUSR2 are logged and otherwise ignored, since their default action
// would kill the process without cleaning up; SIGPIPE is ignored.
#pragma once

#include "common/uds.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace owrap {

class SignalWatcher {
 public:
  // Blocks the handled signals in the calling thread, so create it before
  // any other thread exists: every later thread inherits the mask.
  explicit SignalWatcher(std::string who);
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // The termination signal received so far, or 0.
  int termination() const { return termination_.load(); }
  // Waits for SIGTERM/SIGINT, at most `timeout` when given; returns the
  // signal or 0.
  int wait_for_termination(std::optional<std::chrono::milliseconds> timeout = std::nullopt);

 private:
  void run();
  std::string who_;
  UniqueFd signal_fd_;
  UniqueFd wake_;
  std::atomic<int> termination_{0};
  std::mutex mu_;
  std::condition_variable terminated_;
  std::thread thread_;
};

}  // namespace owrap
