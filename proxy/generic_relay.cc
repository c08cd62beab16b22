#include "proxy/generic_relay.h"

#include "common/grpc_util.h"
#include "common/log.h"

#include <optional>
#include "proxy/unary_call.h"  // log_call: one access-log path for every call

namespace owrap {

// Pairs a server-side generic call with a client-side one on the same
// completion queue, so its steps never run concurrently. One message per
// direction is in flight: the slower side paces the faster. The server call
// is finished once the delegate's status is in and no downstream write is
// pending; the object goes once no operation is in flight.
class GenericRelay::Call {
 public:
  static void listen(GenericRelay& relay, grpc::ServerCompletionQueue* cq) {
    auto* call = new Call(relay, cq);
    call->in_flight_++;
    relay.service_.RequestCall(&call->ctx_, &call->downstream_, cq, cq, &call->request_tag_);
  }

 private:
  Call(GenericRelay& relay, grpc::ServerCompletionQueue* cq)
      : relay_(relay), token_(relay.queues_.tracker()), cq_(cq), downstream_(&ctx_) {}

  void on_request(bool ok) {
    if (!ok) {  // the server is shutting down
      downstream_closed_ = true;
      return;
    }
    listen(relay_, cq_);
    active_.emplace(relay_.queues_.tracker());
    start_ = std::chrono::steady_clock::now();
    grpc::Status refused = admit_call(ctx_, relay_.wrapper_name_, relay_.queues_.tracker());
    if (!refused.ok()) {
      status_ = std::move(refused);
      upstream_done_ = true;
      return maybe_finish_downstream();
    }
    // Linked to the server call: deadline and cancellation reach the delegate.
    client_ctx_ = grpc::ClientContext::FromServerContext(ctx_);
    copy_request_metadata(ctx_, *client_ctx_);
    upstream_ = relay_.stub_.PrepareCall(client_ctx_.get(), ctx_.method(), cq_);
    start(upstream_started_tag_, [&](void* tag) { upstream_->StartCall(tag); });
  }

  void on_upstream_started(bool ok) {
    if (!ok) return finish_upstream();
    start(upstream_metadata_tag_, [&](void* tag) { upstream_->ReadInitialMetadata(tag); });
    read_downstream();
  }

  // Responses are read only once the delegate's headers are in place.
  void on_upstream_metadata(bool ok) {
    if (!ok) return finish_upstream();
    copy_initial_metadata(*client_ctx_, ctx_);
    read_upstream();
  }

  void read_downstream() {
    start(downstream_read_tag_, [&](void* tag) { downstream_.Read(&request_, tag); });
  }
  void on_downstream_read(bool ok) {
    if (upstream_finishing_) return;
    upstream_writing_ = true;
    if (ok) {
      start(upstream_write_tag_, [&](void* tag) { upstream_->Write(request_, tag); });
    } else {
      half_closed_ = true;
      start(upstream_write_tag_, [&](void* tag) { upstream_->WritesDone(tag); });
    }
  }
  void on_upstream_write(bool ok) {
    upstream_writing_ = false;
    if (upstream_done_) return release_upstream();
    if (ok && !half_closed_ && !downstream_closed_ && !upstream_finishing_) read_downstream();
    // WritesDone completing, or a failed write: the delegate's status tells.
  }

  void read_upstream() {
    start(upstream_read_tag_, [&](void* tag) { upstream_->Read(&response_, tag); });
  }
  void on_upstream_read(bool ok) {
    if (!ok) return finish_upstream();
    downstream_writing_ = true;
    start(downstream_write_tag_, [&](void* tag) { downstream_.Write(response_, tag); });
  }
  void on_downstream_write(bool ok) {
    downstream_writing_ = false;
    if (!ok && client_ctx_) client_ctx_->TryCancel();  // the caller went away
    if (!upstream_finishing_) return read_upstream();
    maybe_finish_downstream();
  }

  void finish_upstream() {
    if (upstream_finishing_) return;
    upstream_finishing_ = true;
    start(upstream_finished_tag_, [&](void* tag) { upstream_->Finish(&status_, tag); });
  }
  void on_upstream_finished(bool) {
    upstream_done_ = true;
    copy_trailing_metadata(*client_ctx_, ctx_);
    status_ = name_unavailable_delegate(status_, relay_.delegate_);
    if (!upstream_writing_) release_upstream();
    maybe_finish_downstream();
  }
  // As in UnaryCall: a delegate call still linked to the server call when
  // that completes is cancelled by gRPC, finished or not, at some cost.
  // Released once its status is in and no operation of it is in flight
  // (its operations live in the stream object).
  void release_upstream() {
    upstream_.reset();  // arena-allocated in the call: before the context
    client_ctx_.reset();
  }

  void maybe_finish_downstream() {
    if (!upstream_done_ || downstream_writing_ || downstream_finishing_) return;
    downstream_finishing_ = true;
    log_call({ctx_.method(), {}, true}, start_, status_);
    start(downstream_finished_tag_, [&](void* tag) { downstream_.Finish(status_, tag); });
  }
  // A downstream read may still be pending until the call is torn down.
  void on_downstream_finished(bool) { downstream_closed_ = true; }

  template <class Op>
  void start(BoundTag<Call>& tag, Op op) {
    in_flight_++;
    op(&tag);
  }
  // Every tag runs its step through here: the object goes after the last
  // step, never in the middle of one.
  template <void (Call::*Step)(bool)>
  void run(bool ok) {
    in_flight_--;
    (this->*Step)(ok);
    if (downstream_closed_ && in_flight_ == 0) delete this;
  }

  GenericRelay& relay_;
  CallTracker::Token token_;
  std::optional<CallTracker::Active> active_;
  grpc::ServerCompletionQueue* cq_;
  grpc::GenericServerContext ctx_;
  grpc::GenericServerAsyncReaderWriter downstream_;
  std::unique_ptr<grpc::ClientContext> client_ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> upstream_;
  grpc::ByteBuffer request_, response_;
  grpc::Status status_;
  std::chrono::steady_clock::time_point start_;
  int in_flight_ = 0;
  bool half_closed_ = false;  // the caller is done sending
  bool upstream_finishing_ = false;
  bool upstream_writing_ = false;  // a Write or WritesDone in flight
  bool upstream_done_ = false;
  bool downstream_writing_ = false;
  bool downstream_finishing_ = false;
  bool downstream_closed_ = false;
  BoundTag<Call> request_tag_{this, &Call::run<&Call::on_request>};
  BoundTag<Call> upstream_started_tag_{this, &Call::run<&Call::on_upstream_started>};
  BoundTag<Call> upstream_metadata_tag_{this, &Call::run<&Call::on_upstream_metadata>};
  BoundTag<Call> downstream_read_tag_{this, &Call::run<&Call::on_downstream_read>};
  BoundTag<Call> upstream_write_tag_{this, &Call::run<&Call::on_upstream_write>};
  BoundTag<Call> upstream_read_tag_{this, &Call::run<&Call::on_upstream_read>};
  BoundTag<Call> downstream_write_tag_{this, &Call::run<&Call::on_downstream_write>};
  BoundTag<Call> upstream_finished_tag_{this, &Call::run<&Call::on_upstream_finished>};
  BoundTag<Call> downstream_finished_tag_{this, &Call::run<&Call::on_downstream_finished>};
};

void GenericRelay::start() {
  for (const auto& cq : queues_.queues()) Call::listen(*this, cq.get());
}

}  // namespace owrap
