// The wrapper's own completion queues: every call it serves or makes (unary
// relays, watchers, the upstream watch, unknown-method relays) runs its gRPC
// operations as tags on one of these, each polled by one thread of ours.
//
// Why not gRPC's callback API: in gRPC 1.51 the callback API brings its own
// polling threads, and with several pollers in a process every socket event
// is handed from the thread that polled it to the one that waits for it. On
// a relayed unary call that is about eight thread switches more than here,
// which costs more than the socket hop the wrapper adds (see
// docs/performance.md).
#pragma once

#include "common/completion_tag.h"

#include <grpcpp/completion_queue.h>
#include <grpcpp/server_builder.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace owrap {

// Counts live calls so shutdown can wait until none can start another
// operation on a queue that is about to be shut down.
class CallTracker {
 public:
  class Token {
   public:
    explicit Token(CallTracker& t) : tracker_(t) { tracker_.live_.fetch_add(1); }
    ~Token() { tracker_.release(); }
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;

   private:
    CallTracker& tracker_;
  };

  void wait_idle();
  long live() const { return live_.load(); }

  // Calls a caller has started and not yet been answered (a listener
  // waiting for a request does not count). Shutdown waits for these, not
  // for idle connections.
  class Active {
   public:
    explicit Active(CallTracker& t) : tracker_(t) { tracker_.active_.fetch_add(1); }
    ~Active() { tracker_.active_.fetch_sub(1); }
    Active(const Active&) = delete;
    Active& operator=(const Active&) = delete;

   private:
    CallTracker& tracker_;
  };
  long active() const { return active_.load(); }
  // From now on new calls are refused (UNAVAILABLE) instead of served.
  void start_draining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  // Waits until no call is active, or until `deadline`; true if none is.
  bool wait_inactive(std::chrono::steady_clock::time_point deadline) const;

 private:
  void release();
  std::atomic<long> live_{0};
  std::atomic<long> active_{0};
  std::atomic<bool> draining_{false};
  std::mutex mu_;
  std::condition_variable idle_;
};

class CompletionQueues {
 public:
  // `threads` == 0: one queue. One thread per queue; a call stays on the
  // queue it arrived on, so its steps never run concurrently.
  explicit CompletionQueues(unsigned threads);
  ~CompletionQueues();
  CompletionQueues(const CompletionQueues&) = delete;
  CompletionQueues& operator=(const CompletionQueues&) = delete;

  // Before the server is built.
  void add_to(grpc::ServerBuilder& builder);
  // After the server has started.
  void start();
  // After grpc::Server::Shutdown and after every source of new calls has
  // stopped: waits until no call is live, then shuts down, drains, joins.
  void stop();

  const std::vector<std::unique_ptr<grpc::ServerCompletionQueue>>& queues() const { return queues_; }
  // A queue for a call the wrapper starts itself.
  grpc::ServerCompletionQueue* any();
  CallTracker& tracker() { return tracker_; }

 private:
  unsigned count_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  std::vector<std::thread> threads_;
  std::atomic<unsigned> next_{0};
  CallTracker tracker_;
  bool stopped_ = false;
};

}  // namespace owrap
