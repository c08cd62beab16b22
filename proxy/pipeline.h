// The per-RPC call pipeline. Every delegated call goes through it:
//
//   before stages (in order) -> delegate -> after stages (in order)
//                     \ on any failure: compensate, in reverse, every stage
//                       whose `before` ran (including the failing one)
//
// Stages are data ({name, rpcs, before, after, compensate}), so adding the
// hook chain and the journal later means adding stages, not editing the
// relay. Stage functions run on a completion-queue thread and must be
// quick; the hook chain will bring stages that run on an executor.
#pragma once

#include "compute_driver.pb.h"

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>
#include <grpcpp/support/status.h>

#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

enum class Rpc {
  kGetCapabilities,
  kGetGatewayListenerRequirements,
  kValidateSandboxCreate,
  kGetSandbox,
  kListSandboxes,
  kCreateSandbox,
  kStopSandbox,
  kStartSandbox,
  kDeleteSandbox,
  kWatchSandboxes,
  kEnsureWorkspace,
  kDeleteWorkspace,
};
constexpr size_t kRpcCount = 12;

std::string_view rpc_name(Rpc rpc);

// What a stage knows about the call. The request's secrets (fields marked
// with the `secret` option, common/secrets.h) are held only to scrub them
// from anything that leaves the process; they are never logged or handed on.
struct CallContext {
  Rpc rpc;
  std::string sandbox_id;
  // The wrapper's own driver_config block, after the split.
  google::protobuf::Struct wrapper_config;
  std::vector<std::string> secrets;
};

struct Stage {
  std::string name;
  std::vector<Rpc> rpcs;  // the RPCs it applies to
  std::function<grpc::Status(CallContext&, google::protobuf::Message& request)> before;
  std::function<grpc::Status(CallContext&, google::protobuf::Message& response)> after;
  // Undo of `before`; errors are the stage's to log, never the caller's.
  std::function<void(CallContext&, const grpc::Status& cause)> compensate;
};

class Pipeline {
 public:
  void add(Stage stage);

  // Runs every applicable `before`. On failure the stages that ran are
  // compensated and their error returned, prefixed with nothing: stages
  // write messages that name the field or path.
  grpc::Status before(CallContext& ctx, google::protobuf::Message& request) const;
  // Runs every applicable `after`; on failure compensates all of them.
  grpc::Status after(CallContext& ctx, google::protobuf::Message& response) const;
  // The delegate failed: undo every applicable stage, in reverse.
  void compensate(CallContext& ctx, const grpc::Status& cause) const;

  size_t stage_count(Rpc rpc) const { return by_rpc_[static_cast<size_t>(rpc)].size(); }

 private:
  void compensate_first(CallContext& ctx, size_t count, const grpc::Status& cause) const;
  std::vector<Stage> stages_;
  std::array<std::vector<size_t>, kRpcCount> by_rpc_;
};

}  // namespace owrap
