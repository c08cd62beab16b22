// poll_tags and the queue thread's own hand-off (defer_on_queue_thread).
#include "common/completion_tag.h"

#include <grpcpp/alarm.h>
#include <catch2/catch.hpp>

#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

using namespace owrap;

namespace {

struct Recorder {
  std::mutex mu;
  std::vector<std::string> events;
  void add(std::string e) {
    std::lock_guard lock(mu);
    events.push_back(std::move(e));
  }
};

// A tag that records itself, then runs `then` inside its proceed().
class StepTag final : public CompletionTag {
 public:
  StepTag(Recorder& r, std::string name, std::function<void()> then = nullptr)
      : r_(r), name_(std::move(name)), then_(std::move(then)) {}
  void proceed(bool ok) override {
    thread = std::this_thread::get_id();
    r_.add(name_ + (ok ? "" : " (not ok)"));
    if (then_) then_();
    r_.add(name_ + " returned");
  }
  std::thread::id thread;

 private:
  Recorder& r_;
  std::string name_;
  std::function<void()> then_;
};

}  // namespace

TEST_CASE("a tag deferred on its queue's thread runs right after the current tag, on that thread",
          "[completion_tag][grpc-queue]") {
  grpc::CompletionQueue cq;
  Recorder rec;
  StepTag second(rec, "second"), third(rec, "third");
  bool deferred_second = false, deferred_third = false;
  StepTag first(rec, "first", [&] {
    deferred_second = defer_on_queue_thread(&cq, &second);
    deferred_third = defer_on_queue_thread(&cq, &third);
  });
  StepTag after(rec, "after");
  grpc::Alarm a1, a2;
  a1.Set(&cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), &first);
  std::thread poller([&] { poll_tags(&cq); });
  // Another event only once the first was handled, so the order is known.
  REQUIRE_FALSE(defer_on_queue_thread(&cq, &after));  // not the queue's thread
  for (int i = 0; i < 500; i++) {
    {
      std::lock_guard lock(rec.mu);
      if (rec.events.size() >= 6) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  a2.Set(&cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), &after);
  for (int i = 0; i < 500; i++) {
    {
      std::lock_guard lock(rec.mu);
      if (rec.events.size() >= 8) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  cq.Shutdown();
  poller.join();
  CHECK(deferred_second);
  CHECK(deferred_third);
  std::vector<std::string> want = {"first", "first returned", "second", "second returned",
                                   "third", "third returned", "after",  "after returned"};
  CHECK(rec.events == want);
  CHECK(second.thread == first.thread);
  CHECK(third.thread == first.thread);
}

TEST_CASE("a tag deferred for another queue is not taken", "[completion_tag][grpc-queue]") {
  grpc::CompletionQueue cq, other;
  Recorder rec;
  StepTag never(rec, "never");
  std::promise<bool> taken;
  StepTag first(rec, "first", [&] { taken.set_value(defer_on_queue_thread(&other, &never)); });
  grpc::Alarm alarm;
  alarm.Set(&cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), &first);
  std::thread poller([&] { poll_tags(&cq); });
  CHECK_FALSE(taken.get_future().get());
  cq.Shutdown();
  poller.join();
  other.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (other.Next(&tag, &ok)) {
  }
  CHECK(rec.events == std::vector<std::string>{"first", "first returned"});
}
