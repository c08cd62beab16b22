#include "proxy/unary_server.h"

namespace owrap {

namespace {

// One listener per RPC would do; a second one keeps a burst of the same RPC
// from waiting for the first listener to be put up again.
constexpr int kListenersPerMethod = 2;

// The generated client call every RPC needs, named once per RPC.
#define OWRAP_UNARY_METHOD(Method)                                                                                    \
  const UnaryMethod<v1::Method##Request, v1::Method##Response> k##Method{                                             \
      Rpc::k##Method, [](v1::ComputeDriver::Stub& stub, grpc::ClientContext* ctx, const v1::Method##Request& request, \
                         grpc::CompletionQueue* cq) { return stub.PrepareAsync##Method(ctx, request, cq); }};

OWRAP_UNARY_METHOD(GetCapabilities)
OWRAP_UNARY_METHOD(GetGatewayListenerRequirements)
OWRAP_UNARY_METHOD(ValidateSandboxCreate)
OWRAP_UNARY_METHOD(GetSandbox)
OWRAP_UNARY_METHOD(ListSandboxes)
OWRAP_UNARY_METHOD(CreateSandbox)
OWRAP_UNARY_METHOD(StopSandbox)
OWRAP_UNARY_METHOD(StartSandbox)
OWRAP_UNARY_METHOD(DeleteSandbox)
OWRAP_UNARY_METHOD(EnsureWorkspace)
OWRAP_UNARY_METHOD(DeleteWorkspace)

#undef OWRAP_UNARY_METHOD

template <class Req, class Resp>
void listen(const UnaryRelay& relay, const UnaryMethod<Req, Resp>& method, grpc::ServerCompletionQueue* cq) {
  for (int i = 0; i < kListenersPerMethod; i++) UnaryCall<Req, Resp>::listen(relay, method, cq);
}

}  // namespace

UnaryServer::UnaryServer(std::string wrapper_name, Delegate& delegate, const Pipeline& pipeline,
                         AsyncComputeDriver& service, CompletionQueues& queues)
    : stub_(v1::ComputeDriver::NewStub(delegate.channel())),
      queues_(queues),
      relay_{std::move(wrapper_name), delegate, *stub_, pipeline, service, queues.tracker()} {}

void UnaryServer::start() {
  for (const auto& queue : queues_.queues()) {
    grpc::ServerCompletionQueue* cq = queue.get();
    listen(relay_, kGetCapabilities, cq);
    listen(relay_, kGetGatewayListenerRequirements, cq);
    listen(relay_, kValidateSandboxCreate, cq);
    listen(relay_, kGetSandbox, cq);
    listen(relay_, kListSandboxes, cq);
    listen(relay_, kCreateSandbox, cq);
    listen(relay_, kStopSandbox, cq);
    listen(relay_, kStartSandbox, cq);
    listen(relay_, kDeleteSandbox, cq);
    listen(relay_, kEnsureWorkspace, cq);
    listen(relay_, kDeleteWorkspace, cq);
  }
}

}  // namespace owrap
