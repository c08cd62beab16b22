#include "common/completion_tag.h"

#include <deque>

namespace owrap {

namespace {

// The queue this thread polls (null elsewhere) and what was deferred to it.
thread_local const grpc::CompletionQueue* polled_queue = nullptr;
thread_local std::deque<CompletionTag*>* deferred_tags = nullptr;

void run_deferred(std::deque<CompletionTag*>& deferred) {
  while (!deferred.empty()) {
    CompletionTag* tag = deferred.front();
    deferred.pop_front();
    tag->proceed(true);
  }
}

}  // namespace

void poll_tags(grpc::CompletionQueue* cq) {
  std::deque<CompletionTag*> deferred;
  polled_queue = cq;
  deferred_tags = &deferred;
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    static_cast<CompletionTag*>(tag)->proceed(ok);
    run_deferred(deferred);
  }
  polled_queue = nullptr;
  deferred_tags = nullptr;
}

bool defer_on_queue_thread(const grpc::CompletionQueue* cq, CompletionTag* tag) {
  if (cq == nullptr || cq != polled_queue || deferred_tags == nullptr) return false;
  deferred_tags->push_back(tag);
  return true;
}

}  // namespace owrap
