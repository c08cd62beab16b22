#include "proxy/watch_hub.h"

#include "common/grpc_util.h"
#include "common/log.h"
#include "plan/write_back.h"

#include <grpcpp/support/async_stream.h>
#include <grpcpp/support/byte_buffer.h>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

#include <functional>

namespace owrap {

namespace asio = boost::asio;
namespace v1 = openshell::compute::v1;
using namespace std::chrono_literals;

namespace {

constexpr auto kRetryInitial = 100ms;
constexpr auto kRetryMax = 2000ms;
// An attempt that delivered an event or stayed up this long was a working
// watch: only then does the reconnect backoff start over. A delegate that
// refuses the watch at once (trailers only) keeps backing off.
constexpr auto kHealthyAfter = 10s;
constexpr auto kResyncRetryInitial = 200ms;
constexpr auto kResyncRetryMax = 10s;
constexpr auto kStillDownLogEvery = 60s;

const char kWatchMethod[] = "/openshell.compute.v1.ComputeDriver/WatchSandboxes";

// Deterministic serialization (map fields sorted), so equal states give
// equal fingerprints whichever call produced them.
uint64_t fingerprint(const v1::DriverSandbox& sandbox) {
  return std::hash<std::string>{}(canonical_bytes(sandbox));
}

nlohmann::json status_fields(const std::string& delegate, const grpc::Status& s) {
  return {
      {"delegate", delegate}, {"status", std::string(status_code_name(s.error_code()))}, {"error", s.error_message()}};
}

}  // namespace

// One attempt at the upstream watch: an async WatchSandboxes call on one of
// the wrapper's queues. Completions are posted to the hub's strand, which
// owns all of the state below and starts every operation, so at most one
// read is ever in flight. Lifetime is the relays' one scheme (an in-flight
// count, on the strand): the call until its status is in, a resync list,
// and every delivery to the fan-out each count one; the object goes at zero.
//
// Events are read as raw bytes and parsed here: a typed reader reports an
// event that does not parse exactly like the end of the stream (ok=false),
// and Finish would then wait for a status that an open stream never sends.
class WatchHub::Upstream {
 public:
  Upstream(WatchHub& hub, uint64_t id) : hub_(hub), id_(id), token_(hub.queues_.tracker()), cq_(hub.queues_.any()) {}

  uint64_t id() const { return id_; }
  grpc::ServerCompletionQueue* cq() const { return cq_; }
  bool healthy() const { return healthy_; }
  void set_healthy() { healthy_ = true; }

  void begin() {
    // The hub's own calls count as the first hop: through a loop of
    // wrappers they end at the hop limit like any other call.
    ctx_.AddMetadata(std::string(kHopsMetadata), "1");
    reader_.reset(grpc::internal::ClientAsyncReaderFactory<grpc::ByteBuffer>::Create(
        hub_.channel_.get(), cq_, hub_.watch_method_, &ctx_, request_, false, nullptr));
    op_pending_ = true;
    reader_->StartCall(&start_tag_);
  }
  void read_next() {
    if (finishing_ || op_pending_) return;
    op_pending_ = true;
    reader_->Read(&buffer_, &read_tag_);
  }
  // Ends the attempt: an operation in flight fails and leads to finish().
  void abandon() {
    abandoned_ = true;
    ctx_.TryCancel();
    if (!op_pending_) finish();
  }

  void start_op() { ops_++; }
  void end_op() {
    if (--ops_ == 0) delete this;
  }

 private:
  // Completion-queue thread: hand over to the strand.
  void on_started(bool ok) {
    asio::post(hub_.strand_, [this, ok] {
      op_pending_ = false;
      if (!ok || abandoned_) return finish();
      // Not waiting for response headers: drivers written with grpc-go or
      // grpcio send them only with the first event.
      hub_.on_started(this);
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
    bool parsed = grpc::SerializationTraits<WatchEvent>::Deserialize(&buffer_, event.get()).ok();
    asio::post(hub_.strand_, [this, parsed, event = std::move(event)]() mutable {
      op_pending_ = false;
      if (!parsed) return garbled();
      hub_.on_event(this, std::move(event));
    });
  }
  void on_finished(bool) {
    asio::post(hub_.strand_, [this] {
      grpc::Status s =
          garbled_ ? unparsable_reply_status(hub_.delegate_, "WatchSandboxes", WatchEvent::descriptor()->full_name())
                   : status_;
      hub_.on_upstream_done(this, s);
      end_op();
    });
  }

  // The stream is still open; cancel it so Finish returns.
  void garbled() {
    garbled_ = true;
    ctx_.TryCancel();
    finish();
  }
  void finish() {
    if (finishing_) return;
    finishing_ = true;
    reader_->Finish(&status_, &finish_tag_);
  }

  WatchHub& hub_;
  const uint64_t id_;
  CallTracker::Token token_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ClientContext ctx_;
  v1::WatchSandboxesRequest request_;
  std::unique_ptr<grpc::ClientAsyncReader<grpc::ByteBuffer>> reader_;
  grpc::ByteBuffer buffer_;
  grpc::Status status_;
  BoundTag<Upstream> start_tag_{this, &Upstream::on_started};
  BoundTag<Upstream> read_tag_{this, &Upstream::on_read};
  BoundTag<Upstream> finish_tag_{this, &Upstream::on_finished};
  // Strand only:
  int ops_ = 1;  // the call itself, until its status is in
  bool op_pending_ = false;
  bool finishing_ = false;
  bool abandoned_ = false;
  bool garbled_ = false;
  bool healthy_ = false;
};

// One ListSandboxes of a resync, beside the live stream of `upstream`
// (which it keeps alive, and with it the call's tracker token).
class WatchHub::ResyncList {
 public:
  ResyncList(WatchHub& hub, Upstream* upstream) : hub_(hub), upstream_(upstream) {
    static const v1::ListSandboxesRequest kList;
    upstream_->start_op();
    ctx_.AddMetadata(std::string(kHopsMetadata), "1");
    ctx_.set_deadline(std::chrono::system_clock::now() + hub_.options_.resync_timeout);
    reader_ = hub_.stub_->PrepareAsyncListSandboxes(&ctx_, kList, upstream_->cq());
    reader_->StartCall();
    reader_->Finish(&response_, &status_, &tag_);
  }
  void cancel() { ctx_.TryCancel(); }

 private:
  // A reply that does not parse completes with ok=false and an OK status:
  // it must never be read as "no sandboxes".
  void on_done(bool ok) {
    asio::post(hub_.strand_, [this, ok] {
      grpc::Status s = status_;
      if (!ok && s.ok()) {
        s = unparsable_reply_status(hub_.delegate_, "ListSandboxes",
                                    v1::ListSandboxesResponse::descriptor()->full_name());
      }
      hub_.on_listed(this, upstream_, s, response_);
      upstream_->end_op();
      delete this;
    });
  }

  WatchHub& hub_;
  Upstream* upstream_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ListSandboxesResponse>> reader_;
  v1::ListSandboxesResponse response_;
  grpc::Status status_;
  BoundTag<ResyncList> tag_{this, &ResyncList::on_done};
};

WatchHub::WatchHub(asio::io_context& io, Delegate& delegate, WatchHubOptions options, CompletionQueues& queues)
    : io_(io),
      delegate_(delegate),
      queues_(queues),
      options_(options),
      channel_(delegate.channel()),
      stub_(v1::ComputeDriver::NewStub(channel_)),
      watch_method_(kWatchMethod, grpc::internal::RpcMethod::SERVER_STREAMING, channel_),
      fanout_(io, options.fanout, queues.tracker()),
      strand_(asio::make_strand(io)),
      retry_(strand_),
      healthy_(strand_),
      resync_retry_(strand_),
      retry_backoff_(kRetryInitial),
      resync_backoff_(kResyncRetryInitial) {}

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
    healthy_.cancel();
    resync_retry_.cancel();
    if (resync_) resync_->cancel();
    if (current_) current_->abandon();
  });
  fanout_.close_all(std::move(downstream_status));
}

void WatchHub::connect() {
  if (stopping_) return;
  current_ = new Upstream(*this, ++attempts_);
  current_->begin();
}

void WatchHub::on_started(Upstream* u) {
  if (u != current_ || stopping_) return;
  if (!opened_once_) {
    opened_once_ = true;
    log_info("upstream watch open", {{"delegate", delegate_.name()}});
  }
  healthy_.expires_after(kHealthyAfter);
  healthy_.async_wait([this, id = u->id()](const boost::system::error_code& ec) {
    if (!ec && current_ && current_->id() == id) mark_healthy(current_);
  });
  if (need_resync_) start_resync(u);
}

void WatchHub::mark_healthy(Upstream* u) {
  if (u->healthy()) return;
  u->set_healthy();
  healthy_.cancel();
  retry_backoff_ = kRetryInitial;
  update_live();
  if (!down_) return;
  down_ = false;
  auto down_for = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - down_since_);
  log_info("upstream watch re-established",
           {{"delegate", delegate_.name()}, {"down_ms", down_for.count()}, {"failed_attempts", failed_attempts_}});
}

void WatchHub::on_event(Upstream* u, SharedWatchEvent event) {
  if (u != current_ || stopping_) {
    u->abandon();
    return;
  }
  mark_healthy(u);
  deliver(u, std::move(event));
}

void WatchHub::deliver(Upstream* u, SharedWatchEvent event) {
  track(*event);
  // The next upstream read starts only once this event is queued for every
  // watcher: a slow fan-out slows the upstream instead of buffering it.
  u->start_op();
  fanout_.publish(std::move(event), [this, u] {
    asio::post(strand_, [u] {
      u->read_next();
      u->end_op();
    });
  });
}

void WatchHub::track(const WatchEvent& event) {
  const std::string* id = nullptr;
  if (event.has_sandbox()) {
    id = &event.sandbox().sandbox().id();
    published_[*id] = fingerprint(event.sandbox().sandbox());
  } else if (event.has_deleted()) {
    id = &event.deleted().sandbox_id();
    published_.erase(*id);
  }
  if (id && resync_) touched_.insert(*id);
  if (options_.observer) options_.observer(event);
}

void WatchHub::on_upstream_done(Upstream* u, const grpc::Status& s) {
  if (u != current_) return;
  current_ = nullptr;
  healthy_.cancel();
  resync_retry_.cancel();
  if (resync_) {
    resync_->cancel();  // its completion finds a different current_ and is dropped
    resync_ = nullptr;
  }
  // Whatever happened while no watch was up is unknown: resync next time.
  need_resync_ = true;
  update_live();
  if (stopping_) return;
  note_broken(s);
  retry_.expires_after(retry_backoff_);
  retry_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) connect();
  });
  retry_backoff_ = std::min<std::chrono::milliseconds>(retry_backoff_ * 2, kRetryMax);
}

// Live needs both: a healthy attempt proves the delegate registered the
// watch (so a list begun afterwards misses nothing), and after a break the
// resync has told the watchers what changed while it was down.
void WatchHub::update_live() {
  bool live = current_ && current_->healthy() && !need_resync_ && !stopping_;
  if (live == live_) return;
  live_ = live;
  if (options_.liveness) options_.liveness(live);
}

void WatchHub::note_broken(const grpc::Status& s) {
  auto now = Clock::now();
  if (!down_) {
    down_ = true;
    down_since_ = last_down_log_ = now;
    failed_attempts_ = 1;
    log_warn("upstream watch ended; re-establishing with backoff", status_fields(delegate_.name(), s));
    return;
  }
  failed_attempts_++;
  if (now - last_down_log_ < kStillDownLogEvery) return;
  last_down_log_ = now;
  auto fields = status_fields(delegate_.name(), s);
  fields["failed_attempts"] = failed_attempts_;
  fields["down_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(now - down_since_).count();
  log_warn("upstream watch still down", fields);
}

void WatchHub::start_resync(Upstream* u) {
  touched_.clear();
  resync_ = new ResyncList(*this, u);
}

void WatchHub::on_listed(ResyncList* list, Upstream* u, const grpc::Status& s,
                         const v1::ListSandboxesResponse& response) {
  if (resync_ == list) resync_ = nullptr;
  if (u != current_ || stopping_) return;
  if (!s.ok()) return retry_resync(u->id(), s);
  apply_resync(response);
}

// Live events keep flowing meanwhile; only the list is retried.
void WatchHub::retry_resync(uint64_t attempt, const grpc::Status& s) {
  resync_failures_++;
  if (!resync_failing_) {
    resync_failing_ = true;
    log_warn("resync list failed; live events keep flowing, retrying with backoff", status_fields(delegate_.name(), s));
  }
  resync_retry_.expires_after(resync_backoff_);
  resync_retry_.async_wait([this, attempt](const boost::system::error_code& ec) {
    if (!ec && !stopping_ && current_ && current_->id() == attempt && need_resync_ && !resync_) start_resync(current_);
  });
  resync_backoff_ = std::min<std::chrono::milliseconds>(resync_backoff_ * 2, kResyncRetryMax);
}

// A sandbox a live event touched while the list was in flight is skipped:
// the event is newer. Of the others, only what differs from the last state
// published goes out, so a resync never repeats what watchers already know.
void WatchHub::apply_resync(const v1::ListSandboxesResponse& response) {
  std::set<std::string> listed;
  size_t changed = 0, vanished = 0;
  for (const auto& sandbox : response.sandboxes()) {
    listed.insert(sandbox.id());
    if (touched_.count(sandbox.id())) continue;
    uint64_t fp = fingerprint(sandbox);
    auto it = published_.find(sandbox.id());
    if (it != published_.end() && it->second == fp) continue;
    published_[sandbox.id()] = fp;
    auto ev = std::make_shared<WatchEvent>();
    *ev->mutable_sandbox()->mutable_sandbox() = sandbox;
    // The observer (after_ready, quota's index) sees what the watchers see.
    if (options_.observer) options_.observer(*ev);
    fanout_.publish(std::move(ev));
    changed++;
  }
  for (auto it = published_.begin(); it != published_.end();) {
    if (listed.count(it->first) || touched_.count(it->first)) {
      ++it;
      continue;
    }
    auto ev = std::make_shared<WatchEvent>();
    ev->mutable_deleted()->set_sandbox_id(it->first);
    if (options_.observer) options_.observer(*ev);
    fanout_.publish(std::move(ev));
    vanished++;
    it = published_.erase(it);
  }
  touched_.clear();
  need_resync_ = false;
  update_live();
  resync_backoff_ = kResyncRetryInitial;
  nlohmann::json fields = {{"delegate", delegate_.name()},
                           {"sandboxes", response.sandboxes_size()},
                           {"changed", changed},
                           {"vanished", vanished}};
  if (resync_failing_) fields["failed_lists"] = resync_failures_;
  resync_failing_ = false;
  resync_failures_ = 0;
  log_info("watch resynced", fields);
}

}  // namespace owrap
