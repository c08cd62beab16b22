// What every WatchSandboxes fan-out shares, whichever gRPC API serves it:
// the wrapper's (proxy/watch_fanout.h, async API on its completion queues)
// and the memory driver's (callback API). "Too slow" means the same in both.
#pragma once

#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <set>
#include <string>

namespace owrap {

struct WatchFanoutOptions {
  size_t queue_capacity = 1024;
  // How long a watcher ended for being slow may take to read its status
  // before the call is cancelled outright.
  std::chrono::milliseconds finish_grace{10000};
};

// Logs that a watcher is ended for falling behind, and returns the status
// it is ended with.
grpc::Status watcher_fell_behind(size_t queue_capacity, const std::string& peer);

// The live watchers of one fan-out, and whether it is closed. Strand only,
// except count(). `Watcher` has push(const std::shared_ptr<const Event>&)
// and finish(const grpc::Status&).
template <class Watcher, class Event>
class WatcherRegistry {
 public:
  // False once closed: the caller finishes its watcher with close_status().
  bool admit(Watcher* w) {
    if (closed_) return false;
    if (watchers_.insert(w).second) count_++;
    return true;
  }
  void remove(Watcher* w) {
    if (watchers_.erase(w) > 0) count_--;
  }
  void publish(const std::shared_ptr<const Event>& event) {
    for (Watcher* w : watchers_) w->push(event);
  }
  void close(const grpc::Status& status) {
    closed_ = true;
    close_status_ = status;
    for (Watcher* w : watchers_) w->finish(status);
  }
  const grpc::Status& close_status() const { return close_status_; }
  size_t count() const { return count_.load(); }

 private:
  std::set<Watcher*> watchers_;
  bool closed_ = false;
  grpc::Status close_status_;
  std::atomic<size_t> count_{0};
};

}  // namespace owrap
