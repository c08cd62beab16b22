// What every stage of a call may know about it. The secret values are held
// only to scrub them from anything that leaves the process; they are never
// logged or handed on.
#pragma once

#include "call/rpc.h"

#include <google/protobuf/struct.pb.h>
#include <grpcpp/completion_queue.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace owrap {

struct CallState {
  Rpc rpc = Rpc::kGetCapabilities;
  std::string sandbox_id;
  // The wrapper's own driver_config block, after the split.
  google::protobuf::Struct wrapper_config;
  // Every secret-marked value of the request (common/secrets.h).
  std::vector<std::string> secrets;
  // The caller's deadline (max() when it sent none).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  // The caller's W3C trace context, passed on to hooks.
  std::string traceparent;
  // The call's own completion queue (its tags are CompletionTags), so work
  // a stage starts (a grpc hook) completes there without a thread hop; null
  // where the call has none (tests, the plan tool).
  grpc::CompletionQueue* cq = nullptr;
  // What the hook chain keeps between its steps of one call (hooks/).
  std::shared_ptr<void> hook_run;
};

}  // namespace owrap
