// Serving gRPC on a guarded Unix socket.
#pragma once

#include "common/result.h"
#include "common/uds.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace owrap {

class UdsGrpcServer {
 public:
  // Binds `path` (see GuardedSocket), starts a server with `services` and an
  // optional catch-all generic service, and accepts same-uid peers only.
  // `configure` may add completion queues before the server is built.
  // With `handoff`, accepted connections go there instead of to the server
  // (which then only sees the connections its owner adds).
  static Result<std::unique_ptr<UdsGrpcServer>> start(const std::string& path, std::vector<grpc::Service*> services,
                                                      grpc::CallbackGenericService* generic, std::string who,
                                                      const std::function<void(grpc::ServerBuilder&)>& configure = {},
                                                      ConnectionHandoff handoff = {});
  ~UdsGrpcServer();

  // Refuses new connections (existing ones may still start calls).
  void stop_accepting();
  // Stops accepting, lets in-flight calls finish within `grace`, then
  // cancels what is left. The socket file is removed. gRPC's own grace
  // also waits for idle connections to go away; a caller that knows when
  // its calls are done passes 0 then.
  void shutdown(std::chrono::milliseconds grace);
  grpc::Server* server() { return server_.get(); }
  const std::string& path() const { return socket_->path(); }

 private:
  UdsGrpcServer() = default;
  std::unique_ptr<GuardedSocket> socket_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<PeerCheckedAcceptor> acceptor_;
  bool stopped_ = false;
};

}  // namespace owrap
