// The delegate's ListSandboxes for hooks that count sandboxes (quota's
// HookEnvironment::list_sandboxes): an async call on one of the wrapper's
// own completion queues. Not gRPC's callback API: in gRPC 1.51 (epoll1) it
// starts threads that wait in Next on a queue that polls, and such a thread
// takes part in handling every socket of the process, the calls' included,
// and wakes the call's thread for them (measured: two "nexting_thread"s
// with 20,000 wake-ups each over 3,000 creates).
#pragma once

#include "delegates/delegate.h"
#include "hooks/hook_factory.h"
#include "proxy/completion_queues.h"

#include <chrono>
#include <mutex>
#include <unordered_set>

namespace owrap {

class DelegateLister {
 public:
  DelegateLister(Delegate& delegate, CompletionQueues& queues) : delegate_(delegate), queues_(queues) {}
  ~DelegateLister() { cancel_all(); }

  // `done` runs once, on a queue thread (or here, at once, when the
  // wrapper is not serving). The deadline is capped at 30 s.
  void list(std::chrono::steady_clock::time_point deadline, HookEnvironment::ListDone done);
  // Before the queues stop: lists in flight end with CANCELLED, new ones
  // are refused.
  void cancel_all();

  HookEnvironment::ListFn as_function() {
    return [this](std::chrono::steady_clock::time_point deadline, HookEnvironment::ListDone done) {
      list(deadline, std::move(done));
    };
  }

 private:
  class Call;
  void forget(Call* call);

  Delegate& delegate_;
  CompletionQueues& queues_;
  std::mutex mu_;
  std::unordered_set<Call*> live_;
  bool stopped_ = false;
};

}  // namespace owrap
