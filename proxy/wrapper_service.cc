#include "proxy/wrapper_service.h"

namespace owrap {

WrapperService::WrapperService(Delegate& delegate, const Pipeline& pipeline, WatchHub& hub)
    : stub_(v1::ComputeDriver::NewStub(delegate.channel())), relay_{delegate, *stub_, pipeline}, hub_(hub) {}

// Each handler names its RPC and the stub method to call; everything else
// lives in UnaryCall, written once.
#define OWRAP_UNARY(Method)                                                                                          \
  grpc::ServerUnaryReactor* WrapperService::Method(grpc::CallbackServerContext* ctx, const v1::Method##Request* req, \
                                                   v1::Method##Response* resp) {                                     \
    return UnaryCall<v1::Method##Request, v1::Method##Response>::start(                                              \
        relay_, ctx, Rpc::k##Method, *req, resp,                                                                     \
        [](v1::ComputeDriver::StubInterface::async_interface* async, grpc::ClientContext* c,                         \
           const v1::Method##Request* rq, v1::Method##Response* rs,                                                  \
           std::function<void(grpc::Status)> done) { async->Method(c, rq, rs, std::move(done)); });                  \
  }

OWRAP_UNARY(GetCapabilities)
OWRAP_UNARY(GetGatewayListenerRequirements)
OWRAP_UNARY(ValidateSandboxCreate)
OWRAP_UNARY(GetSandbox)
OWRAP_UNARY(ListSandboxes)
OWRAP_UNARY(CreateSandbox)
OWRAP_UNARY(StopSandbox)
OWRAP_UNARY(StartSandbox)
OWRAP_UNARY(DeleteSandbox)
OWRAP_UNARY(EnsureWorkspace)
OWRAP_UNARY(DeleteWorkspace)

#undef OWRAP_UNARY

grpc::ServerWriteReactor<v1::WatchSandboxesEvent>* WrapperService::WatchSandboxes(grpc::CallbackServerContext* ctx,
                                                                                  const v1::WatchSandboxesRequest*) {
  return hub_.subscribe(ctx);
}

}  // namespace owrap
