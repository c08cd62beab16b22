#include "proxy/pipeline.h"

namespace owrap {

std::string_view rpc_name(Rpc rpc) {
  static constexpr std::array<std::string_view, kRpcCount> kNames = {
      "GetCapabilities",       "GetGatewayListenerRequirements",
      "ValidateSandboxCreate", "GetSandbox",
      "ListSandboxes",         "CreateSandbox",
      "StopSandbox",           "StartSandbox",
      "DeleteSandbox",         "WatchSandboxes",
      "EnsureWorkspace",       "DeleteWorkspace"};
  return kNames[static_cast<size_t>(rpc)];
}

void Pipeline::add(Stage stage) {
  size_t index = stages_.size();
  for (Rpc rpc : stage.rpcs) by_rpc_[static_cast<size_t>(rpc)].push_back(index);
  stages_.push_back(std::move(stage));
}

grpc::Status Pipeline::before(CallContext& ctx, google::protobuf::Message& request) const {
  const auto& order = by_rpc_[static_cast<size_t>(ctx.rpc)];
  for (size_t i = 0; i < order.size(); i++) {
    const Stage& stage = stages_[order[i]];
    if (!stage.before) continue;
    grpc::Status s = stage.before(ctx, request);
    if (!s.ok()) {
      compensate_first(ctx, i + 1, s);
      return s;
    }
  }
  return grpc::Status::OK;
}

grpc::Status Pipeline::after(CallContext& ctx, google::protobuf::Message& response) const {
  for (size_t index : by_rpc_[static_cast<size_t>(ctx.rpc)]) {
    const Stage& stage = stages_[index];
    if (!stage.after) continue;
    grpc::Status s = stage.after(ctx, response);
    if (!s.ok()) {
      compensate(ctx, s);
      return s;
    }
  }
  return grpc::Status::OK;
}

void Pipeline::compensate(CallContext& ctx, const grpc::Status& cause) const {
  compensate_first(ctx, by_rpc_[static_cast<size_t>(ctx.rpc)].size(), cause);
}

void Pipeline::compensate_first(CallContext& ctx, size_t count, const grpc::Status& cause) const {
  const auto& order = by_rpc_[static_cast<size_t>(ctx.rpc)];
  for (size_t i = count; i-- > 0;) {
    const Stage& stage = stages_[order[i]];
    if (stage.compensate) stage.compensate(ctx, cause);
  }
}

}  // namespace owrap
