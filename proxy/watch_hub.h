// WatchSandboxes through the wrapper: ONE upstream watch on the delegate,
// fanned out to every downstream watcher (WatchFanout). Live events pass
// through untouched and are never held back. When the upstream watch breaks
// (delegate restart), it is re-established with backoff while downstream
// watchers stay open; because the gateway does not resync, the hub then
// lists the sandboxes (beside the live stream) and publishes what changed
// since it last told the watchers: a snapshot for a sandbox whose state
// differs from the last one published, a deleted event for one that
// vanished. The first connection is never resynced.
#pragma once

#include <functional>

#include "compute_driver.grpc.pb.h"
#include "delegates/delegate.h"
#include "proxy/watch_fanout.h"

#include <grpcpp/impl/rpc_method.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

namespace owrap {

struct WatchHubOptions {
  WatchFanoutOptions fanout;
  // Deadline of the ListSandboxes call of a resync.
  std::chrono::milliseconds resync_timeout{30000};
  // Sees every event published downstream (the hook chain's after_ready);
  // runs on the hub's thread and must not block.
  std::function<void(const openshell::compute::v1::WatchSandboxesEvent&)> observer;
  // Told on every change whether the upstream watch is live: established
  // at the delegate (it delivered an event or stayed up kHealthyAfter) and,
  // after a break, resynced. false as soon as it breaks. Runs on the hub's
  // thread, after the events published before the change, and must not
  // block (the quota builtin counts from the watch only while it is live).
  std::function<void(bool live)> liveness;
};

class WatchHub {
 public:
  WatchHub(boost::asio::io_context& io, Delegate& delegate, WatchHubOptions options, CompletionQueues& queues);
  ~WatchHub();

  void start();
  // Cancels the upstream watch and ends every downstream watcher.
  void stop(grpc::Status downstream_status);
  // Requests downstream WatchSandboxes calls on every queue.
  void listen(openshell::compute::v1::ComputeDriver::AsyncService& service);
  size_t watcher_count() const { return fanout_.watcher_count(); }

  class Upstream;
  class ResyncList;

 private:
  friend class Upstream;
  friend class ResyncList;
  using Clock = std::chrono::steady_clock;

  void connect();
  void on_started(Upstream* u);
  void on_event(Upstream* u, SharedWatchEvent event);
  void on_upstream_done(Upstream* u, const grpc::Status& s);
  void mark_healthy(Upstream* u);
  void note_broken(const grpc::Status& s);
  void update_live();
  void deliver(Upstream* u, SharedWatchEvent event);
  void track(const WatchEvent& event);

  void start_resync(Upstream* u);
  void on_listed(ResyncList* list, Upstream* u, const grpc::Status& s,
                 const openshell::compute::v1::ListSandboxesResponse& response);
  void retry_resync(uint64_t attempt, const grpc::Status& s);
  void apply_resync(const openshell::compute::v1::ListSandboxesResponse& response);

  boost::asio::io_context& io_;
  Delegate& delegate_;
  CompletionQueues& queues_;
  WatchHubOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<openshell::compute::v1::ComputeDriver::Stub> stub_;
  grpc::internal::RpcMethod watch_method_;
  WatchFanout fanout_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer retry_;         // next upstream attempt
  boost::asio::steady_timer healthy_;       // an attempt that stays up counts as healthy
  boost::asio::steady_timer resync_retry_;  // next resync list after a failed one

  // Strand only:
  Upstream* current_ = nullptr;
  uint64_t attempts_ = 0;  // ids of Upstream objects, for timers
  bool stopping_ = false;
  bool live_ = false;  // last told to options_.liveness
  std::chrono::milliseconds retry_backoff_;
  // Resync: needed after every break, never on the first connection.
  bool need_resync_ = false;
  ResyncList* resync_ = nullptr;   // in flight
  std::set<std::string> touched_;  // ids a live event changed while resync_ was in flight
  std::chrono::milliseconds resync_backoff_;
  bool resync_failing_ = false;
  unsigned resync_failures_ = 0;
  // Fingerprint of the last state published downstream, per live sandbox.
  std::unordered_map<std::string, uint64_t> published_;
  // Logging: a line on each state change, and "still down" at most once a
  // minute, never one per retry.
  bool opened_once_ = false;
  bool down_ = false;
  Clock::time_point down_since_;
  Clock::time_point last_down_log_;
  unsigned failed_attempts_ = 0;
};

}  // namespace owrap
