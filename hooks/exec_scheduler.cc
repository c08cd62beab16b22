#include "hooks/exec_scheduler.h"

namespace owrap {

namespace {
constexpr const char* kStopping = "the wrapper is stopping";
}

void ExecScheduler::submit(const std::shared_ptr<ExecInvocation>& invocation, CancelSignal& cancel) {
  if (stopping_) {
    invocation->abort(grpc::StatusCode::CANCELLED, kStopping);
    return;
  }
  invocation->watch(cancel);
  if (running_.size() < max_in_flight_ && queue_.empty()) {
    launch(invocation);
    return;
  }
  // Those that ended while waiting (deadline, cancel) leave the queue now,
  // so a hook stuck at its limit does not accumulate them.
  std::erase_if(queue_, [](const auto& queued) { return queued->finished(); });
  queue_.push_back(invocation);
}

void ExecScheduler::launch(const std::shared_ptr<ExecInvocation>& invocation) {
  running_.emplace(invocation.get(), invocation);
  invocation->run([weak = weak_from_this(), raw = invocation.get()] {
    if (auto self = weak.lock()) self->released(raw);
  });
}

void ExecScheduler::released(ExecInvocation* invocation) {
  running_.erase(invocation);
  start_queued();
}

void ExecScheduler::start_queued() {
  while (!stopping_ && running_.size() < max_in_flight_ && !queue_.empty()) {
    auto next = std::move(queue_.front());
    queue_.pop_front();
    if (!next->finished()) launch(next);
  }
}

void ExecScheduler::stop_all() {
  stopping_ = true;
  auto queued = std::move(queue_);
  queue_.clear();
  for (auto& invocation : queued) invocation->abort(grpc::StatusCode::CANCELLED, kStopping);
  auto running = std::move(running_);
  running_.clear();
  for (auto& [raw, invocation] : running) invocation->abort_and_reap(kStopping);
}

}  // namespace owrap
