// The one tag type on the wrapper's completion queues. Whatever puts an
// operation on a queue the wrapper polls (a relayed call, the upstream
// watch, a grpc hook invoked on the call's own queue) passes a
// CompletionTag, and the queue's thread calls proceed() with gRPC's `ok`.
#pragma once

#include <grpcpp/completion_queue.h>

namespace owrap {

// Everything put on a completion queue is a CompletionTag.
class CompletionTag {
 public:
  virtual ~CompletionTag() = default;
  virtual void proceed(bool ok) = 0;
};

// A tag that calls owner->*step(ok): for objects with several operations in
// flight at once (a read and a write, say), one tag each.
template <class T>
class BoundTag final : public CompletionTag {
 public:
  BoundTag(T* owner, void (T::*step)(bool)) : owner_(owner), step_(step) {}
  void proceed(bool ok) override { (owner_->*step_)(ok); }

 private:
  T* owner_;
  void (T::*step_)(bool);
};

// Polls `cq` until it is shut down and drained, handing every tag its
// event; one thread per queue. Tags deferred (below) by a tag's proceed()
// run right after it returns.
void poll_tags(grpc::CompletionQueue* cq);

// The queue thread's own hand-off. Code running on the thread that polls
// `cq` (inside a tag's proceed()) may defer a tag for that queue: it runs on
// this thread as soon as the current proceed() returns (with ok = true),
// in order, without a trip through gRPC. A resume posted by a grpc hook
// answering on the call's own queue needs no alarm this way. On any other
// thread defer() says false and the caller posts through the queue.
bool defer_on_queue_thread(const grpc::CompletionQueue* cq, CompletionTag* tag);

}  // namespace owrap
