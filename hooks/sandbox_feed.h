// What the wrapper's own upstream watch says, for hooks that keep their own
// view of the delegate's sandboxes instead of listing them on every call
// (the quota builtin). The wrapper's WatchHub feeds it from its thread:
// every event it publishes downstream, in order, and whether its upstream
// watch is live. It knows nothing of the hub (hooks/ never depends on
// proxy/), so tests feed it by hand.
#pragma once

#include "compute_driver.pb.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace owrap {

class SandboxFeed {
 public:
  struct Observer {
    // Every event, in the order the hub published it downstream.
    std::function<void(const openshell::compute::v1::WatchSandboxesEvent&)> event;
    // live = true: the upstream watch is established at the delegate (it
    // delivered an event, or stayed up long enough) and, after a break, the
    // hub's resync is done. From that moment until the next live = false,
    // every change the delegate makes reaches event(): a ListSandboxes
    // begun after this call, plus the events that follow, describes the
    // delegate's sandboxes. live = false: events may have been lost.
    std::function<void(bool live)> health;
  };

  // Ends the subscription on destruction; once the destructor returned, no
  // callback of it runs any more.
  class Subscription {
   public:
    Subscription() = default;
    Subscription(std::shared_ptr<SandboxFeed> feed, uint64_t id) : feed_(std::move(feed)), id_(id) {}
    Subscription(Subscription&& other) noexcept { *this = std::move(other); }
    Subscription& operator=(Subscription&& other) noexcept;
    ~Subscription() { reset(); }
    void reset();

   private:
    std::shared_ptr<SandboxFeed> feed_;
    uint64_t id_ = 0;
  };

  // health() is called at once with the current state. Callbacks run on
  // the publisher's thread, one at a time, and must neither block nor call
  // the feed.
  static Subscription subscribe(const std::shared_ptr<SandboxFeed>& feed, Observer observer);

  // The publisher (the hub's thread).
  void publish(const openshell::compute::v1::WatchSandboxesEvent& event);
  void set_live(bool live);

  bool live() const;

 private:
  void unsubscribe(uint64_t id);

  mutable std::mutex mu_;  // held while callbacks run: unsubscribe waits for them
  bool live_ = false;
  uint64_t next_id_ = 0;
  std::map<uint64_t, Observer> observers_;
};

}  // namespace owrap
