#include "proxy/completion_queues.h"

namespace owrap {

void CallTracker::wait_idle() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [this] { return live_.load() == 0; });
}

bool CallTracker::wait_inactive(std::chrono::steady_clock::time_point deadline) const {
  // Polled: calls end on queue threads that must not pay for a notify.
  while (active_.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void CallTracker::release() {
  if (live_.fetch_sub(1) == 1) {
    // Taking the lock orders this notify after a waiter's predicate check.
    std::lock_guard lock(mu_);
    idle_.notify_all();
  }
}

CompletionQueues::CompletionQueues(unsigned threads) : count_(threads == 0 ? 1 : threads) {}

CompletionQueues::~CompletionQueues() {
  stop();
}

void CompletionQueues::add_to(grpc::ServerBuilder& builder) {
  for (unsigned i = 0; i < count_; i++) queues_.push_back(builder.AddCompletionQueue());
}

void CompletionQueues::start() {
  for (auto& cq : queues_) threads_.emplace_back(poll_tags, cq.get());
}

grpc::ServerCompletionQueue* CompletionQueues::any() {
  return queues_[next_.fetch_add(1) % queues_.size()].get();
}

void CompletionQueues::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (!threads_.empty()) tracker_.wait_idle();
  for (auto& cq : queues_) cq->Shutdown();
  if (threads_.empty()) {
    for (auto& cq : queues_) poll_tags(cq.get());
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

}  // namespace owrap
