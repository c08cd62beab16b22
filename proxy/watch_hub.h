// WatchSandboxes through the wrapper: ONE upstream watch on the delegate,
// fanned out to every downstream watcher (WatchFanout). When the upstream
// watch breaks (delegate restart), it is re-established with backoff while
// downstream watchers stay open; because the gateway does not resync, the
// hub then emits a snapshot of every sandbox (from ListSandboxes) and a
// deleted event for every sandbox that vanished meanwhile.
#pragma once

#include "compute_driver.grpc.pb.h"
#include "delegates/delegate.h"
#include "proxy/watch_fanout.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <memory>
#include <set>
#include <string>

namespace owrap {

class WatchHub {
 public:
  WatchHub(boost::asio::io_context& io, Delegate& delegate, WatchFanoutOptions options, CompletionQueues& queues);
  ~WatchHub();

  void start();
  // Cancels the upstream watch and ends every downstream watcher.
  void stop(grpc::Status downstream_status);
  // Requests downstream WatchSandboxes calls on every queue.
  void listen(openshell::compute::v1::ComputeDriver::AsyncService& service);
  size_t watcher_count() const { return fanout_.watcher_count(); }
  uint64_t upstream_generation() const { return generation_.load(); }

  class Upstream;

 private:
  friend class Upstream;
  void connect();
  void on_established(Upstream* u);
  void on_event(Upstream* u, SharedWatchEvent event);
  void on_listed(Upstream* u, const grpc::Status& s, const openshell::compute::v1::ListSandboxesResponse& list);
  void on_upstream_done(Upstream* u, const grpc::Status& s);
  void deliver(Upstream* u, SharedWatchEvent event);
  void track(const WatchEvent& event);

  boost::asio::io_context& io_;
  Delegate& delegate_;
  CompletionQueues& queues_;
  std::unique_ptr<openshell::compute::v1::ComputeDriver::Stub> stub_;
  WatchFanout fanout_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer retry_;
  // Strand only:
  Upstream* current_ = nullptr;
  bool stopping_ = false;
  bool resyncing_ = false;
  SharedWatchEvent held_;  // an event that arrived while resyncing
  std::set<std::string> known_ids_;
  std::chrono::milliseconds backoff_{100};
  std::atomic<uint64_t> generation_{0};
};

}  // namespace owrap
