// Fans WatchSandboxes events out to any number of downstream watchers. Each
// watcher has a bounded queue; one that falls behind is ended with
// RESOURCE_EXHAUSTED (and cancelled if it never reads again) instead of
// growing memory, and the others never notice. Watchers are async
// WatchSandboxes calls on the wrapper's completion queues; every completion
// is posted to one strand, which owns all watcher state, so completions
// never race with each other or with publish(), and no lock is held while
// gRPC is called.
#pragma once

#include "common/watcher_registry.h"
#include "compute_driver.grpc.pb.h"
#include "proxy/completion_queues.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <set>
#include <string>

namespace owrap {

using WatchEvent = openshell::compute::v1::WatchSandboxesEvent;
using SharedWatchEvent = std::shared_ptr<const WatchEvent>;

class WatchFanout {
 public:
  WatchFanout(boost::asio::io_context& io, WatchFanoutOptions options, CallTracker& tracker);
  ~WatchFanout();
  WatchFanout(const WatchFanout&) = delete;
  WatchFanout& operator=(const WatchFanout&) = delete;

  // Requests WatchSandboxes calls on `cq` (after the server has started);
  // each call received requests its successor.
  void listen(openshell::compute::v1::ComputeDriver::AsyncService& service, grpc::ServerCompletionQueue* cq);

  // Queues `event` for every current watcher, in call order. `done`, if
  // given, runs on the strand once the event has been handed to all of them:
  // callers use it to pace their own source.
  void publish(SharedWatchEvent event, std::function<void()> done = {});

  // Ends every watcher with `status` (shutdown).
  void close_all(grpc::Status status);

  size_t watcher_count() const;

  class Watcher;

 private:
  friend class Watcher;
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

}  // namespace owrap
