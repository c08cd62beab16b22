#include "proxy/watch_hub.h"

#include "common/grpc_util.h"
#include "common/log.h"

#include <boost/asio/post.hpp>

namespace owrap {

namespace asio = boost::asio;
namespace v1 = openshell::compute::v1;

// One attempt at the upstream watch. Every reaction is posted to the hub's
// strand, which owns all of the fields below. A hold keeps OnDone from
// running until the read side has ended, and a reference count keeps the
// object alive until OnDone, the resync list and every delivery are done.
class WatchHub::Upstream final : public grpc::ClientReadReactor<WatchEvent> {
 public:
  explicit Upstream(WatchHub& hub) : hub_(hub) {}

  void begin() {
    hub_.stub_->async()->WatchSandboxes(&ctx_, &request_, this);
    AddHold();
    read_pending_ = true;
    StartRead(&event_);
    StartCall();
  }
  void read_next() {
    if (done_ || read_pending_) return;
    read_pending_ = true;
    StartRead(&event_);
  }
  // Ends the attempt; the pending read (started if need be) fails, which
  // releases the hold.
  void abandon() {
    ctx_.TryCancel();
    read_next();
  }

  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) asio::post(hub_.strand_, [this] { hub_.on_established(this); });
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      RemoveHold();
      return;
    }
    auto event = std::make_shared<WatchEvent>();
    event->Swap(&event_);
    asio::post(hub_.strand_, [this, event = std::move(event)]() mutable {
      read_pending_ = false;
      hub_.on_event(this, std::move(event));
    });
  }
  void OnDone(const grpc::Status& s) override {
    asio::post(hub_.strand_, [this, s] {
      done_ = true;
      hub_.on_upstream_done(this, s);
      release();
    });
  }

  void ref() { refs_++; }
  void release() {
    if (--refs_ == 0) delete this;
  }

  v1::ListSandboxesResponse list_;
  grpc::ClientContext list_ctx_;

 private:
  WatchHub& hub_;
  grpc::ClientContext ctx_;
  v1::WatchSandboxesRequest request_;
  WatchEvent event_;
  int refs_ = 1;  // the call itself, until OnDone
  bool read_pending_ = false;
  bool done_ = false;
};

WatchHub::WatchHub(asio::io_context& io, Delegate& delegate, WatchFanoutOptions options)
    : io_(io),
      delegate_(delegate),
      stub_(v1::ComputeDriver::NewStub(delegate.channel())),
      fanout_(io, options),
      strand_(asio::make_strand(io)),
      retry_(strand_) {}

WatchHub::~WatchHub() = default;

void WatchHub::start() {
  asio::post(strand_, [this] { connect(); });
}

void WatchHub::stop(grpc::Status downstream_status) {
  asio::post(strand_, [this] {
    stopping_ = true;
    retry_.cancel();
    if (current_) current_->abandon();
  });
  fanout_.close_all(std::move(downstream_status));
}

void WatchHub::connect() {
  if (stopping_) return;
  current_ = new Upstream(*this);
  current_->begin();
}

void WatchHub::on_established(Upstream* u) {
  if (u != current_ || stopping_) return;
  backoff_ = std::chrono::milliseconds(100);
  generation_++;
  log_info("upstream watch established", {{"delegate", delegate_.name()}, {"generation", generation_.load()}});
  // Resync: list what exists now. Events that arrive meanwhile wait (at
  // most one, since the next read starts only after delivery).
  resyncing_ = true;
  u->list_ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  static const v1::ListSandboxesRequest kList;
  u->ref();
  stub_->async()->ListSandboxes(&u->list_ctx_, &kList, &u->list_, [this, u](grpc::Status s) {
    asio::post(strand_, [this, u, s] {
      on_listed(u, s, u->list_);
      u->release();
    });
  });
}

void WatchHub::on_listed(Upstream* u, const grpc::Status& s, const v1::ListSandboxesResponse& list) {
  if (u != current_ || stopping_) return;
  if (!s.ok()) {
    log_warn("resync list failed; re-establishing the upstream watch",
             {{"delegate", delegate_.name()},
              {"status", std::string(status_code_name(s.error_code()))},
              {"error", s.error_message()}});
    held_.reset();
    u->abandon();
    return;
  }
  std::set<std::string> now;
  for (const auto& sandbox : list.sandboxes()) {
    now.insert(sandbox.id());
    auto ev = std::make_shared<WatchEvent>();
    *ev->mutable_sandbox()->mutable_sandbox() = sandbox;
    fanout_.publish(std::move(ev));
  }
  size_t vanished = 0;
  for (const auto& id : known_ids_) {
    if (now.count(id)) continue;
    auto ev = std::make_shared<WatchEvent>();
    ev->mutable_deleted()->set_sandbox_id(id);
    fanout_.publish(std::move(ev));
    vanished++;
  }
  known_ids_ = std::move(now);
  log_info("watch resynced",
           {{"delegate", delegate_.name()}, {"sandboxes", known_ids_.size()}, {"vanished", vanished}});
  resyncing_ = false;
  if (held_) deliver(u, std::move(held_));
}

void WatchHub::on_event(Upstream* u, SharedWatchEvent event) {
  if (u != current_ || stopping_) {
    u->abandon();
    return;
  }
  if (resyncing_) {
    held_ = std::move(event);
    return;
  }
  deliver(u, std::move(event));
}

void WatchHub::deliver(Upstream* u, SharedWatchEvent event) {
  track(*event);
  // The next upstream read starts only once this event is queued for every
  // watcher: a slow fan-out slows the upstream instead of buffering it.
  u->ref();
  fanout_.publish(std::move(event), [this, u] {
    asio::post(strand_, [u] {
      u->read_next();
      u->release();
    });
  });
}

void WatchHub::track(const WatchEvent& event) {
  if (event.has_sandbox())
    known_ids_.insert(event.sandbox().sandbox().id());
  else if (event.has_deleted())
    known_ids_.erase(event.deleted().sandbox_id());
}

void WatchHub::on_upstream_done(Upstream* u, const grpc::Status& s) {
  if (u != current_) return;
  current_ = nullptr;
  resyncing_ = false;
  held_.reset();
  if (stopping_) return;
  log_warn("upstream watch ended; re-establishing", {{"delegate", delegate_.name()},
                                                     {"status", std::string(status_code_name(s.error_code()))},
                                                     {"error", s.error_message()},
                                                     {"backoff_ms", backoff_.count()}});
  retry_.expires_after(backoff_);
  retry_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) connect();
  });
  backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
}

}  // namespace owrap
