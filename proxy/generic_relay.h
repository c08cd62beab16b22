// Forwards any method this build does not know to the delegate, byte for
// byte, unary and streaming alike, so an older wrapper never blocks a newer
// gateway/driver pair.
#pragma once

#include "delegates/delegate.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>

namespace owrap {

class GenericRelay final : public grpc::CallbackGenericService {
 public:
  explicit GenericRelay(Delegate& delegate) : delegate_(delegate), stub_(delegate.channel()) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;

 private:
  Delegate& delegate_;
  grpc::GenericStub stub_;
};

}  // namespace owrap
