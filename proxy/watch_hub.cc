#include "proxy/watch_hub.h"

#include "common/grpc_util.h"
#include "common/log.h"

#include <boost/asio/post.hpp>

namespace owrap {

namespace asio = boost::asio;
namespace v1 = openshell::compute::v1;

// One attempt at the upstream watch: an async WatchSandboxes call on one of
// the wrapper's queues, and the ListSandboxes that resyncs after it is
// established. Completions are posted to the hub's strand, which owns all of
// the state below and starts every operation, so at most one read is ever in
// flight. A reference count keeps the object alive until the call's status,
// the resync list and every delivery are done.
class WatchHub::Upstream {
 public:
  explicit Upstream(WatchHub& hub) : hub_(hub), token_(hub.queues_.tracker()), cq_(hub.queues_.any()) {}

  void begin() {
    reader_ = hub_.stub_->PrepareAsyncWatchSandboxes(&ctx_, request_, cq_);
    op_pending_ = true;
    reader_->StartCall(&start_tag_);
  }
  void read_next() {
    if (finishing_ || op_pending_) return;
    op_pending_ = true;
    reader_->Read(&event_, &read_tag_);
  }
  // Ends the attempt: an operation in flight fails and leads to finish().
  void abandon() {
    abandoned_ = true;
    ctx_.TryCancel();
    list_ctx_.TryCancel();
    if (!op_pending_) finish();
  }
  void list() {
    static const v1::ListSandboxesRequest kList;
    ref();
    list_ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    list_reader_ = hub_.stub_->PrepareAsyncListSandboxes(&list_ctx_, kList, cq_);
    list_reader_->StartCall();
    list_reader_->Finish(&list_, &list_status_, &list_tag_);
  }

  void ref() { refs_++; }
  void release() {
    if (--refs_ == 0) delete this;
  }

 private:
  // Completion-queue thread: hand over to the strand.
  void on_started(bool ok) {
    asio::post(hub_.strand_, [this, ok] {
      op_pending_ = false;
      if (!ok || abandoned_) return finish();
      op_pending_ = true;
      reader_->ReadInitialMetadata(&metadata_tag_);
    });
  }
  void on_metadata(bool ok) {
    asio::post(hub_.strand_, [this, ok] {
      op_pending_ = false;
      if (!ok || abandoned_) return finish();
      hub_.on_established(this);
      read_next();
    });
  }
  void on_read(bool ok) {
    if (!ok) {
      asio::post(hub_.strand_, [this] {
        op_pending_ = false;
        finish();
      });
      return;
    }
    auto event = std::make_shared<WatchEvent>();
    event->Swap(&event_);
    asio::post(hub_.strand_, [this, event = std::move(event)]() mutable {
      op_pending_ = false;
      hub_.on_event(this, std::move(event));
    });
  }
  void on_finished(bool) {
    asio::post(hub_.strand_, [this] {
      hub_.on_upstream_done(this, status_);
      release();
    });
  }
  void on_listed(bool) {
    asio::post(hub_.strand_, [this] {
      hub_.on_listed(this, list_status_, list_);
      release();
    });
  }

  void finish() {
    if (finishing_) return;
    finishing_ = true;
    reader_->Finish(&status_, &finish_tag_);
  }

  WatchHub& hub_;
  CallTracker::Token token_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ClientContext ctx_;
  v1::WatchSandboxesRequest request_;
  std::unique_ptr<grpc::ClientAsyncReader<WatchEvent>> reader_;
  WatchEvent event_;
  grpc::Status status_;
  grpc::ClientContext list_ctx_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ListSandboxesResponse>> list_reader_;
  v1::ListSandboxesResponse list_;
  grpc::Status list_status_;
  BoundTag<Upstream> start_tag_{this, &Upstream::on_started};
  BoundTag<Upstream> metadata_tag_{this, &Upstream::on_metadata};
  BoundTag<Upstream> read_tag_{this, &Upstream::on_read};
  BoundTag<Upstream> finish_tag_{this, &Upstream::on_finished};
  BoundTag<Upstream> list_tag_{this, &Upstream::on_listed};
  // Strand only:
  int refs_ = 1;  // the call itself, until its status is in
  bool op_pending_ = false;
  bool finishing_ = false;
  bool abandoned_ = false;
};

WatchHub::WatchHub(asio::io_context& io, Delegate& delegate, WatchFanoutOptions options, CompletionQueues& queues)
    : io_(io),
      delegate_(delegate),
      queues_(queues),
      stub_(v1::ComputeDriver::NewStub(delegate.channel())),
      fanout_(io, options, queues.tracker()),
      strand_(asio::make_strand(io)),
      retry_(strand_) {}

WatchHub::~WatchHub() = default;

void WatchHub::listen(v1::ComputeDriver::AsyncService& service) {
  for (const auto& cq : queues_.queues()) fanout_.listen(service, cq.get());
}

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
  u->list();
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
