#include "proxy/unary_server.h"

namespace owrap {

namespace {

// One listener per RPC would do; a second one keeps a burst of the same RPC
// from waiting for the first listener to be put up again.
constexpr int kListenersPerMethod = 2;

// Listeners for one RPC of the table; streaming RPCs have their own server
// (WatchHub). `Prepare` is the generated stub's call for the RPC.
template <Rpc R, bool Streaming, auto Prepare>
void listen_unary(const UnaryRelay& relay, grpc::ServerCompletionQueue* cq) {
  if constexpr (!Streaming) {
    using Req = typename RpcTypes<R>::Request;
    using Resp = typename RpcTypes<R>::Response;
    static const UnaryMethod<Req, Resp> method{
        R, [](v1::ComputeDriver::Stub& stub, grpc::ClientContext* ctx, const Req& request, grpc::CompletionQueue* q) {
          return (stub.*Prepare)(ctx, request, q);
        }};
    for (int i = 0; i < kListenersPerMethod; i++) UnaryCall<Req, Resp>::listen(relay, method, cq);
  }
}

}  // namespace

UnaryServer::UnaryServer(std::string wrapper_name, Delegate& delegate, const Pipeline& pipeline,
                         AsyncComputeDriver& service, CompletionQueues& queues)
    : stub_(v1::ComputeDriver::NewStub(delegate.channel())),
      raw_(delegate.channel()),
      queues_(queues),
      relay_{std::move(wrapper_name), delegate, *stub_, raw_, pipeline, service, queues.tracker()} {}

void UnaryServer::start() {
  for (const auto& queue : queues_.queues()) {
#define OWRAP_LISTEN(Name, Req, Resp, Streaming, Ref) \
  listen_unary<Rpc::k##Name, Streaming, &v1::ComputeDriver::Stub::PrepareAsync##Name>(relay_, queue.get());
    OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_LISTEN)
#undef OWRAP_LISTEN
  }
}

}  // namespace owrap
