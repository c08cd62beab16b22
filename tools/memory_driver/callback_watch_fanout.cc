#include "tools/memory_driver/callback_watch_fanout.h"

#include "common/log.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <deque>

namespace owrap::memory {

namespace asio = boost::asio;

struct CallbackWatchFanout::Shared {
  Shared(asio::io_context& io, WatchFanoutOptions o, bool lazy)
      : io(io), strand(asio::make_strand(io)), options(o), lazy_headers(lazy) {}
  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> strand;
  WatchFanoutOptions options;
  bool lazy_headers;
  WatcherRegistry<Watcher, WatchEvent> registry;  // strand only, except count()
};

class CallbackWatchFanout::Watcher : public grpc::ServerWriteReactor<WatchEvent> {
 public:
  Watcher(std::shared_ptr<Shared> shared, grpc::CallbackServerContext* ctx)
      : shared_(std::move(shared)), ctx_(ctx), grace_(shared_->io) {}

  // Strand: the reactor is registered and its headers go out at once, so the
  // caller knows the watch is established before any event exists (unless
  // lazy_headers: then they go with the first event).
  void begin() {
    if (!shared_->registry.admit(this)) return finish(shared_->registry.close_status());
    if (!shared_->lazy_headers) StartSendInitialMetadata();
  }

  void push(const SharedWatchEvent& event) {
    if (finished_) return;
    if (!writing_) {
      write(event);
      return;
    }
    if (queue_.size() >= shared_->options.queue_capacity) {
      finish(watcher_fell_behind(shared_->options.queue_capacity, ctx_->peer()));
      arm_grace();
      return;
    }
    queue_.push_back(event);
  }

  void finish(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    queue_.clear();
    Finish(status);
  }

  void OnSendInitialMetadataDone(bool) override {}
  void OnWriteDone(bool ok) override {
    asio::post(shared_->strand, [this, ok] { on_write_done(ok); });
  }
  void OnCancel() override {
    asio::post(shared_->strand, [this] { finish(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled")); });
  }
  void OnDone() override {
    asio::post(shared_->strand, [this] {
      shared_->registry.remove(this);
      grace_.cancel();
      delete this;
    });
  }

 private:
  void write(const SharedWatchEvent& event) {
    writing_ = true;
    in_flight_ = event;
    StartWrite(in_flight_.get());
  }

  void on_write_done(bool ok) {
    writing_ = false;
    in_flight_.reset();
    if (finished_) return;
    if (!ok) {
      finish(grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away"));
      return;
    }
    if (!queue_.empty()) {
      SharedWatchEvent next = std::move(queue_.front());
      queue_.pop_front();
      write(next);
    }
  }

  // A watcher that stopped reading cannot even receive its status; cancel
  // the call after a grace so its memory and stream are released anyway.
  void arm_grace() {
    grace_.expires_after(shared_->options.finish_grace);
    grace_.async_wait([ctx = ctx_](const boost::system::error_code& ec) {
      if (!ec) ctx->TryCancel();
    });
  }

  std::shared_ptr<Shared> shared_;
  grpc::CallbackServerContext* ctx_;
  asio::steady_timer grace_;
  std::deque<SharedWatchEvent> queue_;
  SharedWatchEvent in_flight_;
  bool writing_ = false;
  bool finished_ = false;
};

CallbackWatchFanout::CallbackWatchFanout(asio::io_context& io, WatchFanoutOptions options, bool lazy_headers)
    : shared_(std::make_shared<Shared>(io, options, lazy_headers)) {}

CallbackWatchFanout::~CallbackWatchFanout() = default;

size_t CallbackWatchFanout::watcher_count() const {
  return shared_->registry.count();
}

grpc::ServerWriteReactor<WatchEvent>* CallbackWatchFanout::subscribe(grpc::CallbackServerContext* ctx) {
  auto* watcher = new Watcher(shared_, ctx);
  asio::post(shared_->strand, [watcher] { watcher->begin(); });
  return watcher;
}

void CallbackWatchFanout::publish(SharedWatchEvent event, std::function<void()> done) {
  asio::post(shared_->strand, [shared = shared_, event = std::move(event), done = std::move(done)] {
    shared->registry.publish(event);
    if (done) done();
  });
}

void CallbackWatchFanout::close_all(grpc::Status status) {
  asio::post(shared_->strand, [shared = shared_, status] { shared->registry.close(status); });
}

}  // namespace owrap::memory
