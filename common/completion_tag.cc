#include "common/completion_tag.h"

#include <deque>

namespace owrap {

namespace {

// The queue this thread polls and what was deferred to it; null on every
// thread but a queue's poller.
struct PollingThread {
  const grpc::CompletionQueue* cq;
  std::deque<CompletionTag*> deferred;
};
thread_local PollingThread* polling = nullptr;

void run_deferred(std::deque<CompletionTag*>& deferred) {
  while (!deferred.empty()) {
    CompletionTag* tag = deferred.front();
    deferred.pop_front();
    tag->proceed(true);
  }
}

}  // namespace

void poll_tags(grpc::CompletionQueue* cq) {
  PollingThread self{cq, {}};
  polling = &self;
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    static_cast<CompletionTag*>(tag)->proceed(ok);
    run_deferred(self.deferred);
  }
  polling = nullptr;
}

bool defer_on_queue_thread(const grpc::CompletionQueue* cq, CompletionTag* tag) {
  if (cq == nullptr || polling == nullptr || polling->cq != cq) return false;
  polling->deferred.push_back(tag);
  return true;
}

}  // namespace owrap
