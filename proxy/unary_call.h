// One delegated unary call: pipeline `before`, the delegate call, pipeline
// `after`, one access log line, Finish. The caller's deadline, cancellation
// and metadata reach the delegate; the delegate's status, message, error
// details and metadata come back unchanged.
//
// A call runs on the completion queue that received it: the server side and
// the delegate call share it, so a relayed call is never handed between
// threads. Every step is one tag on that queue; no step blocks.
#pragma once

#include "common/grpc_util.h"
#include "common/log.h"
#include "common/secrets.h"
#include "compute_driver.grpc.pb.h"
#include "delegates/delegate.h"
#include "proxy/completion_queues.h"
#include "proxy/pipeline.h"

#include <grpcpp/server_context.h>
#include <grpcpp/support/async_unary_call.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <chrono>
#include <memory>
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

// What every unary call needs from the proxy.
struct UnaryRelay {
  std::string wrapper_name;
  Delegate& delegate;
  v1::ComputeDriver::Stub& stub;
  const Pipeline& pipeline;
  AsyncComputeDriver& service;
  CallTracker& tracker;
};

// How one RPC is sent to the delegate.
template <class Req, class Resp>
struct UnaryMethod {
  Rpc rpc;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Resp>> (*prepare)(v1::ComputeDriver::Stub&, grpc::ClientContext*,
                                                                    const Req&, grpc::CompletionQueue*);
};

inline std::string sandbox_id_of(const v1::ValidateSandboxCreateRequest& r) {
  return r.sandbox().id();
}
inline std::string sandbox_id_of(const v1::CreateSandboxRequest& r) {
  return r.sandbox().id();
}
inline std::string sandbox_id_of(const v1::GetSandboxRequest& r) {
  return r.sandbox_id();
}
inline std::string sandbox_id_of(const v1::StopSandboxRequest& r) {
  return r.sandbox_id();
}
inline std::string sandbox_id_of(const v1::StartSandboxRequest& r) {
  return r.sandbox_id();
}
inline std::string sandbox_id_of(const v1::DeleteSandboxRequest& r) {
  return r.sandbox_id();
}
inline std::string sandbox_id_of(const google::protobuf::Message&) {
  return {};
}

// A delegate that echoes a secret of the request must not make us echo it
// too: every value collect_secrets() found is scrubbed from the message.
grpc::Status redact_status(const grpc::Status& s, const std::vector<std::string>& secrets);

// One access-log line per served call, unary or unknown method, with the
// same fields and the same levels: info when OK, warn otherwise.
struct CallLogEntry {
  std::string_view rpc;         // the contract's method name, or an unknown method's full path
  std::string_view sandbox_id;  // logged when not empty
  bool passthrough = false;     // an unknown method, relayed as bytes
  // Scrubbed from the error message (the status the caller gets should
  // already be redacted; this keeps the log safe if it is not).
  const std::vector<std::string>* secrets = nullptr;
};
void log_call(const CallLogEntry& entry, std::chrono::steady_clock::time_point start, const grpc::Status& s);

template <class Req, class Resp>
class UnaryCall final : public CompletionTag {
 public:
  // Puts one call of `method` up for the next request on `cq`. Each
  // received request puts up its successor first.
  static void listen(const UnaryRelay& relay, const UnaryMethod<Req, Resp>& method, grpc::ServerCompletionQueue* cq) {
    auto* call = new UnaryCall(relay, method, cq);
    relay.service.request_raw(method.rpc, &call->server_ctx_, &call->raw_request_, &call->responder_, cq, call);
  }

  void proceed(bool ok) override {
    switch (state_) {
      case State::kListening:
        if (!ok) break;  // the server is shutting down
        listen(relay_, method_, cq_);
        on_request();
        return;
      case State::kDelegating:
        on_delegate_done(ok);
        return;
      case State::kFinishing:
        break;
    }
    delete this;
  }

 private:
  enum class State { kListening, kDelegating, kFinishing };

  UnaryCall(const UnaryRelay& relay, const UnaryMethod<Req, Resp>& method, grpc::ServerCompletionQueue* cq)
      : relay_(relay), method_(method), cq_(cq), token_(relay.tracker), responder_(&server_ctx_) {}

  void on_request() {
    start_ = std::chrono::steady_clock::now();
    ctx_.rpc = method_.rpc;
    if (!grpc::SerializationTraits<Req>::Deserialize(&raw_request_, &request_).ok()) {
      return finish(grpc::Status(
          grpc::StatusCode::INTERNAL,
          std::string(rpc_name(method_.rpc)) + ": the request does not parse as " + Req::descriptor()->full_name()));
    }
    ctx_.sandbox_id = sandbox_id_of(request_);
    ctx_.secrets = collect_secrets(request_);
    if (grpc::Status s = check_wrapper_hops(server_ctx_, relay_.wrapper_name); !s.ok()) return finish(s);
    if (grpc::Status s = relay_.pipeline.before(ctx_, request_); !s.ok()) return finish(s);
    if (!relay_.delegate.available()) {
      grpc::Status s = unavailable_delegate_status(relay_.delegate);
      relay_.pipeline.compensate(ctx_, s);
      return finish(s);
    }
    // Parent and child calls are linked: the caller's deadline and its
    // cancellation reach the delegate call.
    client_ctx_ = grpc::ClientContext::FromServerContext(server_ctx_);
    copy_request_metadata(server_ctx_, *client_ctx_);
    state_ = State::kDelegating;
    reader_ = method_.prepare(relay_.stub, client_ctx_.get(), request_, cq_);
    reader_->StartCall();
    reader_->Finish(&response_, &delegate_status_, this);
  }

  // `ok` is false when the delegate's reply did not parse as Resp: its
  // status may still say OK, and relaying that would pass on a partial
  // message as a success.
  void on_delegate_done(bool ok) {
    copy_response_metadata(*client_ctx_, server_ctx_);
    if (!ok && delegate_status_.ok()) {
      response_.Clear();
      return finish(unparsable_reply_status(relay_.delegate, rpc_name(method_.rpc), Resp::descriptor()->full_name()));
    }
    if (!delegate_status_.ok()) {
      grpc::Status s = name_unavailable_delegate(delegate_status_, relay_.delegate);
      relay_.pipeline.compensate(ctx_, s);
      return finish(s);
    }
    finish(relay_.pipeline.after(ctx_, response_));
  }

  void finish(grpc::Status s) {
    if (!ctx_.secrets.empty() && !s.ok()) s = redact_status(s, ctx_.secrets);
    log_call({rpc_name(ctx_.rpc), ctx_.sandbox_id, false, &ctx_.secrets}, start_, s);
    state_ = State::kFinishing;
    if (!s.ok()) return responder_.FinishWithError(s, this);
    grpc::ByteBuffer reply;
    bool own = false;
    if (grpc::Status ser = grpc::SerializationTraits<Resp>::Serialize(response_, &reply, &own); !ser.ok()) {
      return responder_.FinishWithError(ser, this);
    }
    responder_.Finish(reply, s, this);
  }

  const UnaryRelay& relay_;
  const UnaryMethod<Req, Resp>& method_;
  grpc::ServerCompletionQueue* cq_;
  CallTracker::Token token_;
  State state_ = State::kListening;
  grpc::ServerContext server_ctx_;
  grpc::ByteBuffer raw_request_;
  Req request_;  // stages may rewrite it; unknown fields are kept
  Resp response_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
  std::unique_ptr<grpc::ClientContext> client_ctx_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Resp>> reader_;
  grpc::Status delegate_status_;
  CallContext ctx_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace owrap
