// The one tag type on the wrapper's completion queues. Whatever puts an
// operation on a queue the wrapper polls (a relayed call, the upstream
// watch, a grpc hook invoked on the call's own queue) passes a
// CompletionTag, and the queue's thread calls proceed() with gRPC's `ok`.
#pragma once

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

}  // namespace owrap
