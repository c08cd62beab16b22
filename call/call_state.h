// What every stage of a call may know about it. The secret values are held
// only to scrub them from anything that leaves the process; they are never
// logged or handed on.
#pragma once

#include "call/rpc.h"

#include <google/protobuf/struct.pb.h>

#include <chrono>
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
};

}  // namespace owrap
