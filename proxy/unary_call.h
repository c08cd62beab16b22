// One delegated unary call: pipeline `before`, the delegate call, pipeline
// `after`, one access log line, Finish. The caller's deadline, cancellation
// and metadata reach the delegate; the delegate's status, message, error
// details and metadata come back unchanged.
//
// A call runs on the completion queue that received it: the server side and
// the delegate call share it, so a relayed call is never handed between
// threads. Every step is one tag on that queue; no step blocks.
#pragma once

#include "call/call_runner.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "common/secrets.h"
#include "compute_driver.grpc.pb.h"
#include "delegates/delegate.h"
#include "proxy/completion_queues.h"
#include "proxy/pipeline.h"
#include "proxy/wire_check.h"

#include <grpcpp/alarm.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/async_unary_call.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

namespace v1 = openshell::compute::v1;

// The wrapper serves every ComputeDriver method on the async API, the unary
// ones raw: the wrapper parses each request itself, so a request it cannot
// parse is answered and access-logged like any other failed call (with a
// typed method gRPC refuses it before the application ever hears of it).
class AsyncComputeDriver final : public v1::ComputeDriver::AsyncService {
 public:
  AsyncComputeDriver();
  // The service's method index of `rpc`.
  static int method_index(Rpc rpc);
  void request_raw(Rpc rpc, grpc::ServerContext* ctx, grpc::ByteBuffer* request,
                   grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder, grpc::ServerCompletionQueue* cq,
                   void* tag) {
    RequestAsyncUnary(method_index(rpc), ctx, request, responder, cq, cq, tag);
  }
};

// The delegate's methods as bytes, for RPCs no stage sees (see UnaryCall):
// registered on the delegate channel once, like the generated stub's.
class RawDelegateMethods {
 public:
  explicit RawDelegateMethods(const std::shared_ptr<grpc::Channel>& channel);
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> prepare(Rpc rpc, grpc::ClientContext* ctx,
                                                                             const grpc::ByteBuffer& request,
                                                                             grpc::CompletionQueue* cq) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<grpc::internal::RpcMethod> methods_;  // by Rpc
};

// What every unary call needs from the proxy.
struct UnaryRelay {
  std::string wrapper_name;
  Delegate& delegate;
  v1::ComputeDriver::Stub& stub;
  const RawDelegateMethods& raw;
  const Pipeline& pipeline;
  AsyncComputeDriver& service;
  CallTracker& tracker;
};

// Parses `bytes` into `message` without consuming them (gRPC's own
// deserializer clears the buffer), so they can still be relayed as they are.
bool parse_bytes(grpc::ByteBuffer& bytes, google::protobuf::MessageLite& message);

// How one RPC is sent to the delegate.
template <class Req, class Resp>
struct UnaryMethod {
  Rpc rpc;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Resp>> (*prepare)(v1::ComputeDriver::Stub&, grpc::ClientContext*,
                                                                    const Req&, grpc::CompletionQueue*);
};

// A delegate that echoes a secret of the request must not make us echo it
// too: every value collect_secrets() found is scrubbed from the message.
grpc::Status redact_status(const grpc::Status& s, const std::vector<std::string>& secrets);

// One access-log line per served call, unary or unknown method, with the
// same fields and the same levels: info when OK, warn otherwise.
struct CallLogEntry {
  std::string_view rpc;         // the contract's method name, or an unknown method's full path
  std::string_view sandbox_id;  // logged when not empty
  bool passthrough = false;     // an unknown method, relayed as bytes
  // False when the answer never reached the caller (it went away, or the
  // server cancelled the call at shutdown): logged at warn whatever the
  // status, since an OK the caller never saw is an orphan in the making.
  bool delivered = true;
  // Scrubbed from the error message (the status the caller gets should
  // already be redacted; this keeps the log safe if it is not).
  const std::vector<std::string>* secrets = nullptr;
};
void log_call(const CallLogEntry& entry, std::chrono::steady_clock::time_point start, const grpc::Status& s);
// The line log_call writes, built without JSON objects (it is written per
// call at the default level).
LogLine call_log_line(const CallLogEntry& entry, std::chrono::microseconds latency, const grpc::Status& s,
                      LogLevel level);

// Whether a call that just arrived may be served, unary or unknown method:
// not past the hop limit (a loop of wrappers), and the wrapper not draining
// for shutdown.
grpc::Status admit_call(const grpc::ServerContextBase& call, const std::string& wrapper_name,
                        const CallTracker& tracker);
// The same for a call whose hop count was read elsewhere (the frame relay).
grpc::Status admit_call(int hops, const std::string& wrapper_name, const CallTracker& tracker);

template <class Req, class Resp>
class UnaryCall final : public CallHost {
 public:
  // Puts one call of `method` up for the next request on `cq`. Each
  // received request puts up its successor first.
  static void listen(const UnaryRelay& relay, const UnaryMethod<Req, Resp>& method, grpc::ServerCompletionQueue* cq) {
    auto* call = new UnaryCall(relay, method, cq);
    // Before the request: a caller that cancels or disconnects, and the
    // server's shutdown, reach a suspended stage through this tag.
    call->server_ctx_.AsyncNotifyWhenDone(&call->done_tag_);
    call->start_op();
    relay.service.request_raw(method.rpc, &call->server_ctx_, &call->raw_request_, &call->responder_, cq,
                              &call->request_tag_);
  }

  // CallHost. Any thread: a Resume handle was called.
  void post_resume() override {
    start_op();
    auto* resume = new ResumeAlarm(this);
    // From the call's own queue thread (a grpc hook answering there) the
    // resume runs once the current event is handled; no alarm needed.
    if (!defer_on_queue_thread(cq_, resume)) resume->set(cq_);
  }
  void arm_timer(std::chrono::steady_clock::time_point at) override {
    cancel_timer();
    start_op();
    timer_ = new TimerAlarm(this, ++timer_generation_);
    timer_->set(cq_, at);
  }
  void cancel_timer() override {
    if (timer_ != nullptr) timer_->alarm.Cancel();
    timer_ = nullptr;
  }
  void call_delegate() override {
    if (!relay_.delegate.available()) {
      return runner_.on_delegate_done(unavailable_delegate_status(relay_.delegate), false);
    }
    // Parent and child calls are linked: the caller's deadline and its
    // cancellation reach the delegate call.
    client_ctx_ = grpc::ClientContext::FromServerContext(server_ctx_);
    copy_request_metadata(server_ctx_, *client_ctx_);
    start_op();
    if (raw_) {
      raw_reader_ = relay_.raw.prepare(method_.rpc, client_ctx_.get(), raw_request_, cq_);
      raw_reader_->StartCall();
      return raw_reader_->Finish(&raw_response_, &delegate_status_, &delegate_tag_);
    }
    reader_ = method_.prepare(relay_.stub, client_ctx_.get(), request_, cq_);
    reader_->StartCall();
    reader_->Finish(&response_, &delegate_status_, &delegate_tag_);
  }
  void finish(const grpc::Status& status) override {
    grpc::Status s = status;
    if (!state_.secrets.empty() && !s.ok()) s = redact_status(s, state_.secrets);
    answer_ = s;  // logged once it is known whether the caller got it
    finished_ = true;
    start_op();
    if (!s.ok()) return responder_.FinishWithError(s, &finish_tag_);
    if (raw_) return responder_.Finish(raw_response_, s, &finish_tag_);
    grpc::ByteBuffer reply;
    bool own = false;
    if (grpc::Status ser = grpc::SerializationTraits<Resp>::Serialize(response_, &reply, &own); !ser.ok()) {
      return responder_.FinishWithError(ser, &finish_tag_);
    }
    responder_.Finish(reply, s, &finish_tag_);
  }

 private:
  // One lifetime scheme for every object driven by completion-queue tags:
  // each operation started counts one, each completion one less, and the
  // object goes when nothing is in flight and it has answered (or was never
  // called). Only post_resume counts from another thread, and only while a
  // suspended stage's token is attached, which keeps the call alive.
  void start_op() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void end_op() {
    if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1 && (finished_ || !started_)) delete this;
  }

  // A resume on this call's queue: the thread that finished a stage's work
  // never runs the relay itself.
  struct ResumeAlarm final : CompletionTag {
    explicit ResumeAlarm(UnaryCall* c) : call(c) {}
    // In the past, not "now": gRPC 1.51 rounds an alarm's deadline up to the
    // next millisecond on its timer, so "now" fires 0.6-1 ms late; a past
    // deadline fires at once (grpc/grpc#41950).
    void set(grpc::ServerCompletionQueue* cq) { alarm.Set(cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), this); }
    void proceed(bool) override {
      UnaryCall* c = call;
      delete this;
      c->runner_.on_resumed();
      c->end_op();
    }
    UnaryCall* call;
    grpc::Alarm alarm;
  };
  struct TimerAlarm final : CompletionTag {
    TimerAlarm(UnaryCall* c, uint64_t g) : call(c), generation(g) {}
    void set(grpc::ServerCompletionQueue* cq, std::chrono::steady_clock::time_point at) {
      auto in = std::chrono::duration_cast<std::chrono::nanoseconds>(at - std::chrono::steady_clock::now());
      gpr_timespec when = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                       gpr_time_from_nanos(std::max<int64_t>(in.count(), 0), GPR_TIMESPAN));
      alarm.Set(cq, when, this);
    }
    void proceed(bool ok) override {
      UnaryCall* c = call;
      bool current = ok && c->timer_ == this && c->timer_generation_ == generation;
      if (c->timer_ == this) c->timer_ = nullptr;
      delete this;
      if (current) c->runner_.on_timer();
      c->end_op();
    }
    UnaryCall* call;
    uint64_t generation;
    grpc::Alarm alarm;
  };

  UnaryCall(const UnaryRelay& relay, const UnaryMethod<Req, Resp>& method, grpc::ServerCompletionQueue* cq)
      : relay_(relay),
        method_(method),
        cq_(cq),
        token_(relay.tracker),
        raw_(relay.pipeline.for_rpc(method.rpc).empty()),
        responder_(&server_ctx_),
        runner_(*this, state_, relay.pipeline.for_rpc(method.rpc), request_, response_) {}

  void on_request(bool ok) {
    if (!ok) return end_op();  // the server is shutting down; the done tag never comes
    started_ = true;
    start_op();  // the done tag, now armed
    active_.emplace(relay_.tracker);
    listen(relay_, method_, cq_);
    start_ = std::chrono::steady_clock::now();
    state_.rpc = method_.rpc;
    state_.deadline = caller_deadline();
    state_.cq = cq_;
    state_.traceparent = traceparent_of(server_ctx_);
    // Parsed even when relayed as bytes: a request that does not parse is
    // answered here, and the access log needs the sandbox id.
    if (!parse_bytes(raw_request_, request_)) {
      finish(grpc::Status(
          grpc::StatusCode::INTERNAL,
          std::string(rpc_name(method_.rpc)) + ": the request does not parse as " + Req::descriptor()->full_name()));
      return end_op();
    }
    state_.sandbox_id = sandbox_id_of(method_.rpc, request_);
    state_.secrets = collect_secrets(request_);
    if (grpc::Status s = admit_call(server_ctx_, relay_.wrapper_name, relay_.tracker); !s.ok()) {
      finish(s);
      return end_op();
    }
    runner_.start();
    end_op();
  }

  // `ok` is false when the delegate's reply did not parse as Resp: its
  // status may still say OK, and relaying that would pass on a partial
  // message as a success.
  void on_delegate_done(bool ok) {
    copy_response_metadata(*client_ctx_, server_ctx_, &state_.secrets);
    release_delegate_call();
    grpc::Status s = delegate_status_;
    // A reply relayed as bytes is still checked: one that does not parse is
    // INTERNAL, as on the parsing path.
    static const WireCheck kReplyCheck(*Resp::descriptor());
    if (raw_ && ok && s.ok()) ok = kReplyCheck.parses(raw_response_);
    bool may_have_reached = true;
    if (!ok && s.ok()) {
      response_.Clear();
      s = unparsable_reply_status(relay_.delegate, rpc_name(method_.rpc), Resp::descriptor()->full_name());
    } else if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      may_have_reached = !never_connected(s);
      s = name_unavailable_delegate(s, relay_.delegate);
    } else if (s.error_code() == grpc::StatusCode::CANCELLED &&
               CallRunner::at_deadline(state_.deadline, start_, std::chrono::steady_clock::now())) {
      // The linked delegate call carries the caller's deadline: it ends
      // DEADLINE_EXCEEDED when its own timer fires first, CANCELLED when the
      // server call's cancellation at that deadline (its timer, or the
      // caller's reset) reaches it first. Which wins is a race a loaded box
      // flips; the frame relay answers the deadline for both.
      s = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
    }
    runner_.on_delegate_done(s, may_have_reached);
    end_op();
  }

  // The delegate call goes as soon as its status is in. Kept, it would
  // stay linked to the server call, and gRPC cancels every linked call
  // once the server call completes, answered or not
  // (Call::PropagateCancellationToChildren on recv_close_on_server): a
  // cancel_stream on a closed stream, with a "Stream removed" error built
  // and a status faked, 15-20% of a relayed call's instructions. Answered,
  // it has nothing left to cancel.
  void release_delegate_call() {
    reader_.reset();  // arena-allocated in the call: before the context
    raw_reader_.reset();
    client_ctx_.reset();
  }

  void on_done(bool) {
    if (!server_ctx_.IsCancelled()) return end_op();
    // gRPC cancels a call whose deadline passed the same way as one the
    // caller cancelled; say which it was.
    if (CallRunner::at_deadline(state_.deadline, start_, std::chrono::steady_clock::now())) {
      runner_.on_cancelled(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the caller's deadline passed"));
    } else {
      runner_.on_cancelled();
    }
    end_op();
  }
  void on_finished(bool delivered) {
    log_call({rpc_name(state_.rpc), state_.sandbox_id, false, delivered, &state_.secrets}, start_, answer_);
    end_op();
  }

  std::chrono::steady_clock::time_point caller_deadline() const {
    auto deadline = server_ctx_.deadline();
    if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
      return std::chrono::steady_clock::time_point::max();
    }
    return std::chrono::steady_clock::now() + (deadline - std::chrono::system_clock::now());
  }

  const UnaryRelay& relay_;
  const UnaryMethod<Req, Resp>& method_;
  grpc::ServerCompletionQueue* cq_;
  CallTracker::Token token_;
  // No stage applies to this RPC: the request and reply are relayed as the
  // bytes that came in, neither serialized again nor (the reply) kept
  // parsed. HAProxy and nginx never parse a message; this is as close as
  // the wrapper gets.
  const bool raw_;
  std::optional<CallTracker::Active> active_;  // from the request until the call object goes
  grpc::ServerContext server_ctx_;
  grpc::ByteBuffer raw_request_;
  Req request_;  // stages may rewrite it; unknown fields are kept
  Resp response_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
  std::unique_ptr<grpc::ClientContext> client_ctx_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Resp>> reader_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> raw_reader_;
  grpc::ByteBuffer raw_response_;
  grpc::Status delegate_status_;
  CallState state_;
  grpc::Status answer_;
  CallRunner runner_;
  std::chrono::steady_clock::time_point start_;
  TimerAlarm* timer_ = nullptr;
  uint64_t timer_generation_ = 0;
  std::atomic<int> in_flight_{0};
  bool started_ = false;
  bool finished_ = false;
  BoundTag<UnaryCall> request_tag_{this, &UnaryCall::on_request};
  BoundTag<UnaryCall> done_tag_{this, &UnaryCall::on_done};
  BoundTag<UnaryCall> delegate_tag_{this, &UnaryCall::on_delegate_done};
  BoundTag<UnaryCall> finish_tag_{this, &UnaryCall::on_finished};
};

}  // namespace owrap
