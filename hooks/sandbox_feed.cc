#include "hooks/sandbox_feed.h"

namespace owrap {

SandboxFeed::Subscription& SandboxFeed::Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    reset();
    feed_ = std::move(other.feed_);
    id_ = other.id_;
  }
  return *this;
}

void SandboxFeed::Subscription::reset() {
  if (feed_) feed_->unsubscribe(id_);
  feed_.reset();
}

SandboxFeed::Subscription SandboxFeed::subscribe(const std::shared_ptr<SandboxFeed>& feed, Observer observer) {
  std::lock_guard lock(feed->mu_);
  uint64_t id = ++feed->next_id_;
  if (observer.health) observer.health(feed->live_);
  feed->observers_.emplace(id, std::move(observer));
  return Subscription(feed, id);
}

void SandboxFeed::publish(const openshell::compute::v1::WatchSandboxesEvent& event) {
  std::lock_guard lock(mu_);
  for (auto& [_, o] : observers_) {
    if (o.event) o.event(event);
  }
}

void SandboxFeed::set_live(bool live) {
  std::lock_guard lock(mu_);
  if (live_ == live) return;
  live_ = live;
  for (auto& [_, o] : observers_) {
    if (o.health) o.health(live);
  }
}

bool SandboxFeed::live() const {
  std::lock_guard lock(mu_);
  return live_;
}

void SandboxFeed::unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  observers_.erase(id);
}

}  // namespace owrap
