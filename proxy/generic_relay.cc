#include "proxy/generic_relay.h"

#include "common/grpc_util.h"
#include "common/log.h"

#include <mutex>

namespace owrap {

namespace {

// Pairs a server-side generic bidi call with a client-side one. Messages
// alternate through two buffers (one per direction), so at most one message
// per direction is in flight: the slower side paces the faster. The server
// call is finished only after the delegate's status has arrived and no
// downstream write is pending.
class Relay final : public grpc::ServerGenericBidiReactor {
 public:
  Relay(grpc::GenericCallbackServerContext* ctx, grpc::GenericStub& stub, Delegate& delegate)
      : ctx_(ctx),
        delegate_(delegate),
        client_ctx_(grpc::ClientContext::FromCallbackServerContext(*ctx)),
        upstream_(this),
        start_(std::chrono::steady_clock::now()) {
    copy_request_metadata(*ctx_, *client_ctx_);
    stub.PrepareBidiStreamingCall(client_ctx_.get(), ctx_->method(), {}, &upstream_);
    upstream_.AddHold();  // released when the upstream read side ends
    upstream_.StartCall();
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (upstream_done_) return;
    if (ok)
      upstream_.StartWrite(&request_);
    else
      upstream_.StartWritesDone();
  }
  void OnWriteDone(bool ok) override {
    std::unique_lock<std::recursive_mutex> lock(mu_);
    downstream_writing_ = false;
    if (!ok) client_ctx_->TryCancel();
    if (!upstream_done_) upstream_.StartRead(&response_);
    maybe_finish(lock);
  }
  void OnCancel() override { client_ctx_->TryCancel(); }
  void OnDone() override { delete this; }

 private:
  class Upstream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Upstream(Relay* r) : r_(r) {}
    void OnReadInitialMetadataDone(bool ok) override { r_->on_upstream_metadata(ok); }
    void OnReadDone(bool ok) override { r_->on_upstream_read(ok); }
    void OnWriteDone(bool ok) override { r_->on_upstream_write(ok); }
    void OnDone(const grpc::Status& s) override { r_->on_upstream_done(s); }

   private:
    Relay* r_;
  };

  void on_upstream_metadata(bool ok) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (ok) {
      for (const auto& [k, v] : client_ctx_->GetServerInitialMetadata()) {
        std::string key(k.data(), k.size());
        if (!is_transport_metadata(key)) ctx_->AddInitialMetadata(key, std::string(v.data(), v.size()));
      }
    }
    // Responses are read only once the delegate's headers are in place.
    upstream_.StartRead(&response_);
  }
  void on_upstream_read(bool ok) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!ok) {
      upstream_.RemoveHold();
      return;
    }
    downstream_writing_ = true;
    StartWrite(&response_);
  }
  void on_upstream_write(bool ok) {
    if (ok) StartRead(&request_);  // next request; on failure the status tells
  }
  void on_upstream_done(const grpc::Status& s) {
    std::unique_lock<std::recursive_mutex> lock(mu_);
    upstream_done_ = true;
    for (const auto& [k, v] : client_ctx_->GetServerTrailingMetadata()) {
      std::string key(k.data(), k.size());
      if (!is_transport_metadata(key)) ctx_->AddTrailingMetadata(key, std::string(v.data(), v.size()));
    }
    status_ = s;
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE && !delegate_.available()) {
      status_ = grpc::Status(s.error_code(),
                             "delegate \"" + delegate_.name() + "\" is unavailable: " + delegate_.unavailable_reason() +
                                 " (" + s.error_message() + ")",
                             s.error_details());
    }
    maybe_finish(lock);
  }
  void maybe_finish(std::unique_lock<std::recursive_mutex>&) {
    if (!upstream_done_ || downstream_writing_ || finished_) return;
    finished_ = true;
    auto latency = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start_);
    log_info("rpc", {{"rpc", ctx_->method()},
                     {"latency_us", latency.count()},
                     {"status", status_code_name(status_.error_code())},
                     {"passthrough", true}});
    Finish(status_);
  }

  grpc::GenericCallbackServerContext* ctx_;
  Delegate& delegate_;
  std::unique_ptr<grpc::ClientContext> client_ctx_;
  Upstream upstream_;
  std::chrono::steady_clock::time_point start_;
  std::recursive_mutex mu_;  // reactions may nest when gRPC runs one inline
  grpc::ByteBuffer request_, response_;
  bool upstream_done_ = false;
  bool downstream_writing_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

}  // namespace

grpc::ServerGenericBidiReactor* GenericRelay::CreateReactor(grpc::GenericCallbackServerContext* ctx) {
  return new Relay(ctx, stub_, delegate_);
}

}  // namespace owrap
