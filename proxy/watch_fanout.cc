#include "proxy/watch_fanout.h"

#include "common/log.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>
#include <optional>

namespace owrap {

namespace asio = boost::asio;
namespace v1 = openshell::compute::v1;

struct WatchFanout::Shared {
  Shared(asio::io_context& io, WatchFanoutOptions o, CallTracker& t)
      : io(io), strand(asio::make_strand(io)), options(o), tracker(t) {}
  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> strand;
  WatchFanoutOptions options;
  CallTracker& tracker;
  WatcherRegistry<Watcher, WatchEvent> registry;  // strand only, except count()
};

// One downstream WatchSandboxes call. At most one write-type operation
// (initial metadata, a message, the status) is in flight; the done tag
// tells when the call is over. Lifetime is the relays' one scheme: every
// operation started counts one, every completion one less (on the strand),
// and the object goes at zero: the call is over and nothing is in flight.
class WatchFanout::Watcher {
 public:
  static void listen(std::shared_ptr<Shared> shared, v1::ComputeDriver::AsyncService& service,
                     grpc::ServerCompletionQueue* cq) {
    auto* w = new Watcher(std::move(shared), service, cq);
    w->ctx_.AsyncNotifyWhenDone(&w->done_tag_);
    service.RequestWatchSandboxes(&w->ctx_, &w->request_, &w->writer_, cq, cq, &w->request_tag_);
  }

  // Strand.
  void push(const SharedWatchEvent& event) {
    if (finished_) return;
    if (!writing_) {
      write(event);
      return;
    }
    if (queue_.size() >= shared_->options.queue_capacity) {
      finish(watcher_fell_behind(shared_->options.queue_capacity, ctx_.peer()));
      arm_grace();
      return;
    }
    queue_.push_back(event);
  }

  // Strand.
  void finish(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    queue_.clear();
    if (writing_) {
      pending_status_ = status;  // sent once the write in flight is done
      return;
    }
    send_status(status);
  }

 private:
  Watcher(std::shared_ptr<Shared> shared, v1::ComputeDriver::AsyncService& service, grpc::ServerCompletionQueue* cq)
      : shared_(std::move(shared)),
        token_(shared_->tracker),
        service_(service),
        cq_(cq),
        writer_(&ctx_),
        grace_(shared_->io) {}

  // Completion-queue thread: hand over to the strand.
  void on_request(bool ok) {
    if (!ok) {  // the server is shutting down; the done tag never comes
      delete this;
      return;
    }
    listen(shared_, service_, cq_);
    asio::post(shared_->strand, [this] {
      start_op();  // the done tag, armed now that the call exists
      active_.emplace(shared_->tracker);
      begin();
    });
  }
  void on_write(bool ok) {
    asio::post(shared_->strand, [this, ok] { write_done(ok); });
  }
  void on_status_sent(bool) {
    asio::post(shared_->strand, [this] { end_op(); });
  }
  void on_done(bool) {
    asio::post(shared_->strand, [this] { call_over(); });
  }

  // Strand: headers go out at once, so the caller knows the watch is
  // established before any event exists.
  void begin() {
    if (!shared_->registry.admit(this)) return finish(shared_->registry.close_status());
    writing_ = true;
    start_op();
    writer_.SendInitialMetadata(&write_tag_);
  }

  void write(const SharedWatchEvent& event) {
    writing_ = true;
    in_flight_ = event;
    start_op();
    writer_.Write(*in_flight_, &write_tag_);
  }

  void write_done(bool ok) {
    writing_ = false;
    in_flight_.reset();
    if (pending_status_) {
      send_status(*pending_status_);
      pending_status_.reset();
    } else if (!finished_ && !ok) {
      finish(grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away"));
    } else if (!finished_ && !queue_.empty()) {
      SharedWatchEvent next = std::move(queue_.front());
      queue_.pop_front();
      write(next);
    }
    end_op();
  }

  void send_status(const grpc::Status& status) {
    start_op();
    writer_.Finish(status, &status_tag_);
  }

  void call_over() {
    finished_ = true;  // cancelled by the peer, if not already finished
    queue_.clear();
    shared_->registry.remove(this);
    grace_.cancel();
    end_op();
  }

  void start_op() { ops_++; }
  void end_op() {
    if (--ops_ == 0) delete this;
  }

  // A watcher that stopped reading cannot even receive its status; cancel
  // the call after a grace so its memory and stream are released anyway.
  void arm_grace() {
    grace_.expires_after(shared_->options.finish_grace);
    grace_.async_wait(asio::bind_executor(shared_->strand, [this](const boost::system::error_code& ec) {
      if (!ec) ctx_.TryCancel();
    }));
  }

  std::shared_ptr<Shared> shared_;
  CallTracker::Token token_;
  std::optional<CallTracker::Active> active_;
  v1::ComputeDriver::AsyncService& service_;
  grpc::ServerCompletionQueue* cq_;
  grpc::ServerContext ctx_;
  v1::WatchSandboxesRequest request_;
  grpc::ServerAsyncWriter<WatchEvent> writer_;
  BoundTag<Watcher> request_tag_{this, &Watcher::on_request};
  BoundTag<Watcher> write_tag_{this, &Watcher::on_write};
  BoundTag<Watcher> status_tag_{this, &Watcher::on_status_sent};
  BoundTag<Watcher> done_tag_{this, &Watcher::on_done};
  asio::steady_timer grace_;
  // Strand only:
  std::deque<SharedWatchEvent> queue_;
  SharedWatchEvent in_flight_;
  std::optional<grpc::Status> pending_status_;
  int ops_ = 0;
  bool writing_ = false;
  bool finished_ = false;
};

WatchFanout::WatchFanout(asio::io_context& io, WatchFanoutOptions options, CallTracker& tracker)
    : shared_(std::make_shared<Shared>(io, options, tracker)) {}

WatchFanout::~WatchFanout() = default;

size_t WatchFanout::watcher_count() const {
  return shared_->registry.count();
}

void WatchFanout::listen(v1::ComputeDriver::AsyncService& service, grpc::ServerCompletionQueue* cq) {
  Watcher::listen(shared_, service, cq);
}

void WatchFanout::publish(SharedWatchEvent event, std::function<void()> done) {
  asio::post(shared_->strand, [shared = shared_, event = std::move(event), done = std::move(done)] {
    shared->registry.publish(event);
    if (done) done();
  });
}

void WatchFanout::close_all(grpc::Status status) {
  asio::post(shared_->strand, [shared = shared_, status] { shared->registry.close(status); });
}

}  // namespace owrap
