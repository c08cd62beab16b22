// The memory driver's WatchSandboxes fan-out: the wrapper's policy
// (proxy/watch_fanout.h: bounded queues, slow watchers ended) on gRPC's
// callback API, which the memory driver uses throughout.
// Fans WatchSandboxes events out to any number of downstream watchers. Each
// watcher has a bounded queue; one that falls behind is ended with
// RESOURCE_EXHAUSTED (and cancelled if it never reads again) instead of
// growing memory, and the others never notice. Every watcher operation runs
// on one strand, so gRPC reactions never race with each other or with
// publish(), and no lock is held while gRPC is called.
#pragma once

#include "common/watcher_registry.h"
#include "compute_driver.grpc.pb.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <set>

namespace owrap::memory {

using WatchEvent = openshell::compute::v1::WatchSandboxesEvent;
using SharedWatchEvent = std::shared_ptr<const WatchEvent>;

class CallbackWatchFanout {
 public:
  // `lazy_headers`: a watch's response headers go out with its first event,
  // as grpc-go and grpcio servers do, instead of at once.
  CallbackWatchFanout(boost::asio::io_context& io, WatchFanoutOptions options, bool lazy_headers = false);
  ~CallbackWatchFanout();
  CallbackWatchFanout(const CallbackWatchFanout&) = delete;
  CallbackWatchFanout& operator=(const CallbackWatchFanout&) = delete;

  // Returns the reactor for a new WatchSandboxes call.
  grpc::ServerWriteReactor<WatchEvent>* subscribe(grpc::CallbackServerContext* ctx);

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

}  // namespace owrap::memory
