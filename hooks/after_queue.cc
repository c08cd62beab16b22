#include "hooks/after_queue.h"

#include "common/log.h"

#include <algorithm>

namespace owrap {

struct AfterQueue::Running {
  AfterJob job;
  size_t next = 0;
  std::shared_ptr<CancelSignal> cancel = std::make_shared<CancelSignal>();
};

bool AfterQueue::push(AfterJob job) {
  if (job.empty()) return true;
  std::unique_lock lock(mu_);
  if (stopped_ || waiting_.size() >= capacity_) {
    dropped_.fetch_add(1);
    const AfterInvocation& first = job.front();
    const bool stopping = stopped_;
    lock.unlock();
    log_warn(stopping ? "after-phase hooks dropped: the wrapper is stopping"
                      : "after-phase hooks dropped: the queue is full",
             {{"hook", first.hook->name()},
              {"phase", first.request->phase()},
              {"sandbox_id", first.request->sandbox_id()},
              {"capacity", capacity_},
              {"dropped_total", dropped_.load()}});
    return false;
  }
  waiting_.push_back(std::move(job));
  start_next_locked(lock);
  return true;
}

void AfterQueue::start_next_locked(std::unique_lock<std::mutex>& lock) {
  // Synchronous hooks finish jobs from within this loop: the loop picks up
  // what they free instead of recursing once per job.
  if (starting_) return;
  starting_ = true;
  while (running_ < concurrency_ && !waiting_.empty() && !stopped_) {
    auto job = std::make_shared<Running>();
    job->job = std::move(waiting_.front());
    waiting_.pop_front();
    running_++;
    cancels_.push_back(job->cancel);
    lock.unlock();
    run_step(job);
    lock.lock();
  }
  starting_ = false;
}

void AfterQueue::run_step(std::shared_ptr<Running> job) {
  if (job->next >= job->job.size() || job->cancel->cancelled()) {
    {
      std::lock_guard lock(mu_);
      cancels_.erase(std::remove(cancels_.begin(), cancels_.end(), job->cancel), cancels_.end());
    }
    return job_done();
  }
  const AfterInvocation& inv = job->job[job->next];
  InvokeOptions options;
  options.deadline = std::chrono::steady_clock::now() + inv.spec->timeout;
  options.cancel = job->cancel;
  // Its own timeout, counted from now: the time it waited in the queue is not the hook's to lose.
  inv.request->set_deadline_ms(inv.spec->timeout.count());
  inv.hook->invoke(inv.request, options, [this, job](HookOutcome outcome) {
    const AfterInvocation& done = job->job[job->next];
    if (!outcome.failure.ok()) {
      failed_.fetch_add(1);
      log_warn("after-phase hook failed", {{"hook", done.hook->name()},
                                           {"phase", done.request->phase()},
                                           {"rpc", done.request->rpc()},
                                           {"sandbox_id", done.request->sandbox_id()},
                                           {"error", outcome.failure.error_message()}});
    } else {
      completed_.fetch_add(1);
      log_at(LogLevel::kDebug, "after-phase hook ran", [&] {
        nlohmann::json fields = {
            {"hook", done.hook->name()}, {"phase", done.request->phase()}, {"sandbox_id", done.request->sandbox_id()}};
        for (const auto& [k, v] : outcome.response.log_annotations()) fields["annotations"][k] = v;
        return fields;
      });
    }
    job->next++;
    run_step(job);
  });
}

void AfterQueue::job_done() {
  std::unique_lock lock(mu_);
  running_--;
  start_next_locked(lock);
  if (running_ == 0) idle_.notify_all();
}

void AfterQueue::stop() {
  std::unique_lock lock(mu_);
  if (!stopped_) {
    stopped_ = true;
    dropped_.fetch_add(waiting_.size());
    waiting_.clear();
  }
  auto cancels = cancels_;
  lock.unlock();
  for (auto& c : cancels) c->cancel();
  lock.lock();
  idle_.wait(lock, [this] { return running_ == 0; });
}

}  // namespace owrap
