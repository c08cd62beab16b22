#include "call/rpc.h"

namespace owrap {

const std::array<RpcInfo, kRpcCount>& all_rpcs() {
  static const std::array<RpcInfo, kRpcCount> kAll = {{
#define OWRAP_RPC_INFO(Name, Req, Resp, Streaming, Ref) \
  {Rpc::k##Name, #Name, "/openshell.compute.v1.ComputeDriver/" #Name, Streaming, SandboxRef::Ref},
      OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_RPC_INFO)
#undef OWRAP_RPC_INFO
  }};
  return kAll;
}

std::optional<Rpc> rpc_from_name(std::string_view name) {
  for (const auto& info : all_rpcs())
    if (info.name == name) return info.rpc;
  return std::nullopt;
}

namespace {

template <class Req>
std::string id_of(const Req& r, std::integral_constant<SandboxRef, SandboxRef::kId>) {
  return r.sandbox_id();
}
template <class Req>
std::string id_of(const Req& r, std::integral_constant<SandboxRef, SandboxRef::kMessage>) {
  return r.sandbox().id();
}
template <class Req>
std::string id_of(const Req&, std::integral_constant<SandboxRef, SandboxRef::kNone>) {
  return {};
}

template <class Req>
v1::DriverSandbox* message_of(Req& r, std::integral_constant<SandboxRef, SandboxRef::kMessage>) {
  return r.mutable_sandbox();
}
template <class Req, SandboxRef Ref>
v1::DriverSandbox* message_of(Req&, std::integral_constant<SandboxRef, Ref>) {
  return nullptr;
}

}  // namespace

std::string sandbox_id_of(Rpc rpc, const google::protobuf::Message& request) {
  switch (rpc) {
#define OWRAP_RPC_ID(Name, Req, Resp, Streaming, Ref) \
  case Rpc::k##Name:                                  \
    return id_of(static_cast<const v1::Req&>(request), std::integral_constant<SandboxRef, SandboxRef::Ref>{});
    OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_RPC_ID)
#undef OWRAP_RPC_ID
  }
  return {};
}

v1::DriverSandbox* sandbox_of(Rpc rpc, google::protobuf::Message& request) {
  switch (rpc) {
#define OWRAP_RPC_SANDBOX(Name, Req, Resp, Streaming, Ref) \
  case Rpc::k##Name:                                       \
    return message_of(static_cast<v1::Req&>(request), std::integral_constant<SandboxRef, SandboxRef::Ref>{});
    OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_RPC_SANDBOX)
#undef OWRAP_RPC_SANDBOX
  }
  return nullptr;
}

}  // namespace owrap
