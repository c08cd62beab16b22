// Forwards any method this build does not know to the delegate, byte for
// byte, unary and streaming alike, so an older wrapper never blocks a newer
// gateway/driver pair.
#pragma once

#include "delegates/delegate.h"
#include "proxy/completion_queues.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>

namespace owrap {

class GenericRelay {
 public:
  GenericRelay(std::string wrapper_name, Delegate& delegate, CompletionQueues& queues)
      : wrapper_name_(std::move(wrapper_name)), delegate_(delegate), stub_(delegate.channel()), queues_(queues) {}

  // Before the server is built.
  void register_with(grpc::ServerBuilder& builder) { builder.RegisterAsyncGenericService(&service_); }
  // After the server has started: requests unknown methods on every queue.
  void start();

  class Call;

 private:
  std::string wrapper_name_;
  Delegate& delegate_;
  grpc::GenericStub stub_;
  CompletionQueues& queues_;
  grpc::AsyncGenericService service_;
};

}  // namespace owrap
