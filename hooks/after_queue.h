// After-phase hooks (after_create, on_create_failed, after_stop, ...,
// after_ready) never delay an answer: their invocations wait in a bounded
// queue and run once the response has been handed back. A full queue drops
// the job with a log line and a counter. Their outcome is logged and
// counted, never acted on.
#pragma once

#include "hooks/hook.h"
#include "hooks/hook_spec.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace owrap {

struct AfterInvocation {
  Hook* hook;
  const HookSpec* spec;
  // The job's own: deadline_ms is set when the invocation starts.
  std::shared_ptr<hookpb::HookRequest> request;
};
// One call's after-phase invocations, run one after the other in order.
using AfterJob = std::vector<AfterInvocation>;

class AfterQueue {
 public:
  AfterQueue(size_t capacity, size_t concurrency) : capacity_(capacity), concurrency_(concurrency) {}
  ~AfterQueue() { stop(); }

  // Any thread. False (and logged, counted) when the queue is full or stopped.
  bool push(AfterJob job);
  // Drops what waits (counted), cancels what runs, and returns once nothing runs.
  void stop();

  uint64_t dropped() const { return dropped_.load(); }
  uint64_t failed() const { return failed_.load(); }
  uint64_t completed() const { return completed_.load(); }

 private:
  struct Running;
  void start_next_locked(std::unique_lock<std::mutex>& lock);
  void run_step(std::shared_ptr<Running> job);
  void job_done();

  const size_t capacity_;
  const size_t concurrency_;
  std::mutex mu_;
  std::condition_variable idle_;
  std::deque<AfterJob> waiting_;
  std::vector<std::shared_ptr<CancelSignal>> cancels_;  // of running jobs
  size_t running_ = 0;
  bool stopped_ = false;
  bool starting_ = false;
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> completed_{0};
};

}  // namespace owrap
