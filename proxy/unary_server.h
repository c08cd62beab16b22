// The unary RPCs: every one is requested on every completion queue, and a
// received call puts up its successor before it is relayed (UnaryCall).
#pragma once

#include "proxy/unary_call.h"

#include <memory>

namespace owrap {

class UnaryServer {
 public:
  UnaryServer(std::string wrapper_name, Delegate& delegate, const Pipeline& pipeline, AsyncComputeDriver& service,
              CompletionQueues& queues);

  // After the server has started.
  void start();

 private:
  std::unique_ptr<v1::ComputeDriver::Stub> stub_;
  RawDelegateMethods raw_;
  CompletionQueues& queues_;
  UnaryRelay relay_;
};

}  // namespace owrap
