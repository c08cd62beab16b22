// One delegated unary call: pipeline `before`, the delegate call on the
// async stub (never blocking a gRPC thread), pipeline `after`, one access
// log line, Finish. The caller's deadline, cancellation and metadata reach
// the delegate; the delegate's status, message, error details and metadata
// come back unchanged.
#pragma once

#include "common/grpc_util.h"
#include "common/log.h"
#include "compute_driver.grpc.pb.h"
#include "delegates/delegate.h"
#include "proxy/pipeline.h"

#include <chrono>
#include <memory>

namespace owrap {

namespace v1 = openshell::compute::v1;

// What every unary call needs from the proxy.
struct UnaryRelay {
  Delegate& delegate;
  v1::ComputeDriver::Stub& stub;
  const Pipeline& pipeline;
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

inline std::string secret_of(const v1::CreateSandboxRequest& r) {
  return r.sandbox().spec().sandbox_token();
}
inline std::string secret_of(const v1::ValidateSandboxCreateRequest& r) {
  return r.sandbox().spec().sandbox_token();
}
inline std::string secret_of(const google::protobuf::Message&) {
  return {};
}

// Rewrites a transport failure (the delegate never answered) so the caller
// learns which delegate is down; a status the delegate itself sent is kept.
grpc::Status name_unavailable_delegate(const grpc::Status& s, const grpc::ClientContext& ctx, const Delegate& d);
void log_call(const CallContext& ctx, std::chrono::steady_clock::time_point start, const grpc::Status& s);

template <class Req, class Resp>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  using Invoke = void (*)(v1::ComputeDriver::StubInterface::async_interface*, grpc::ClientContext*, const Req*, Resp*,
                          std::function<void(grpc::Status)>);

  static grpc::ServerUnaryReactor* start(const UnaryRelay& relay, grpc::CallbackServerContext* server_ctx, Rpc rpc,
                                         const Req& request, Resp* response, Invoke invoke) {
    auto* call = new UnaryCall(relay, server_ctx, rpc, request, response);
    call->run(invoke);
    return call;
  }

  void OnCancel() override { client_ctx_->TryCancel(); }
  void OnDone() override { delete this; }

 private:
  UnaryCall(const UnaryRelay& relay, grpc::CallbackServerContext* server_ctx, Rpc rpc, const Req& request,
            Resp* response)
      : relay_(relay),
        server_ctx_(server_ctx),
        request_(request),
        response_(response),
        client_ctx_(grpc::ClientContext::FromCallbackServerContext(*server_ctx)),
        start_(std::chrono::steady_clock::now()) {
    ctx_.rpc = rpc;
    ctx_.sandbox_id = sandbox_id_of(request_);
    ctx_.secret = secret_of(request_);
  }

  void run(Invoke invoke) {
    if (grpc::Status s = relay_.pipeline.before(ctx_, request_); !s.ok()) {
      finish(s);
      return;
    }
    if (!relay_.delegate.available()) {
      grpc::Status s(grpc::StatusCode::UNAVAILABLE, "delegate \"" + relay_.delegate.name() +
                                                        "\" is unavailable: " + relay_.delegate.unavailable_reason());
      relay_.pipeline.compensate(ctx_, s);
      finish(s);
      return;
    }
    copy_request_metadata(*server_ctx_, *client_ctx_);
    invoke(relay_.stub.async(), client_ctx_.get(), &request_, response_,
           [this](grpc::Status s) { on_delegate_done(std::move(s)); });
  }

  void on_delegate_done(grpc::Status s) {
    copy_response_metadata(*client_ctx_, *server_ctx_);
    if (!s.ok()) {
      s = name_unavailable_delegate(s, *client_ctx_, relay_.delegate);
      relay_.pipeline.compensate(ctx_, s);
      finish(s);
      return;
    }
    finish(relay_.pipeline.after(ctx_, *response_));
  }

  void finish(grpc::Status s) {
    if (!ctx_.secret.empty() && !s.ok()) {
      // A delegate that echoes the token must not make us echo it too.
      s = grpc::Status(s.error_code(), Logger::redact(s.error_message(), ctx_.secret), s.error_details());
    }
    log_call(ctx_, start_, s);
    Finish(s);
  }

  const UnaryRelay& relay_;
  grpc::CallbackServerContext* server_ctx_;
  Req request_;  // a copy: stages may rewrite it; unknown fields are kept
  Resp* response_;
  std::unique_ptr<grpc::ClientContext> client_ctx_;
  CallContext ctx_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace owrap
