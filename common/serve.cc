#include "common/serve.h"

#include "common/log.h"

#include <grpcpp/server_builder.h>

namespace owrap {

Result<std::unique_ptr<UdsGrpcServer>> UdsGrpcServer::start(const std::string& path,
                                                            std::vector<grpc::Service*> services,
                                                            grpc::CallbackGenericService* generic, std::string who,
                                                            const std::function<void(grpc::ServerBuilder&)>& configure,
                                                            ConnectionHandoff handoff) {
  auto socket = GuardedSocket::bind(path);
  if (!socket) return Error{socket.error()};
  std::unique_ptr<UdsGrpcServer> out(new UdsGrpcServer());
  out->socket_ = std::move(socket.value());
  grpc::ServerBuilder builder;
  // Large sandboxes lists must not trip the default 4 MiB limit.
  builder.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  builder.SetMaxSendMessageSize(64 * 1024 * 1024);
  builder.AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
  for (auto* s : services) builder.RegisterService(s);
  if (generic != nullptr) builder.RegisterCallbackGenericService(generic);
  if (configure) configure(builder);
  out->server_ = builder.BuildAndStart();
  if (!out->server_) return Error{"cannot start gRPC server for " + path};
  out->acceptor_ =
      std::make_unique<PeerCheckedAcceptor>(*out->socket_, out->server_.get(), std::move(who), std::move(handoff));
  out->acceptor_->start();
  return out;
}

UdsGrpcServer::~UdsGrpcServer() {
  shutdown(std::chrono::milliseconds(0));
}

void UdsGrpcServer::stop_accepting() {
  acceptor_->stop();
  socket_->close_listener();
}

void UdsGrpcServer::shutdown(std::chrono::milliseconds grace) {
  if (stopped_) return;
  stopped_ = true;
  stop_accepting();
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  socket_.reset();
}

}  // namespace owrap
