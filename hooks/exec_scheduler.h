// At most max_in_flight processes of one exec hook at once; the others wait
// in FIFO order, each within its own deadline (an invocation that ended
// while waiting is skipped, never spawned). Io thread only.
#pragma once

#include "hooks/exec_invocation.h"

#include <deque>
#include <memory>
#include <unordered_map>

namespace owrap {

class ExecScheduler : public std::enable_shared_from_this<ExecScheduler> {
 public:
  explicit ExecScheduler(int max_in_flight) : max_in_flight_(max_in_flight < 1 ? 1 : max_in_flight) {}

  // Runs `invocation` now or queues it; once stopping, ends it CANCELLED.
  void submit(const std::shared_ptr<ExecInvocation>& invocation, CancelSignal& cancel);
  // Ends every queued and running invocation with CANCELLED, killing and
  // reaping their processes; later submissions end at once.
  void stop_all();

  size_t running() const { return running_.size(); }
  size_t queued() const { return queue_.size(); }

 private:
  void launch(const std::shared_ptr<ExecInvocation>& invocation);
  void released(ExecInvocation* invocation);
  void start_queued();

  const size_t max_in_flight_;
  bool stopping_ = false;
  std::deque<std::shared_ptr<ExecInvocation>> queue_;
  std::unordered_map<ExecInvocation*, std::shared_ptr<ExecInvocation>> running_;
};

}  // namespace owrap
