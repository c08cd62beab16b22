// The one table of ComputeDriver RPCs. Everything that lists RPCs (the Rpc
// enum, method names, the wrapper's listeners, per-RPC stage selection, a
// future `rpcs = [...]` setting) is derived from OWRAP_COMPUTE_DRIVER_RPCS,
// so adding an RPC is one line here.
#pragma once

#include "compute_driver.pb.h"

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace owrap {

namespace v1 = openshell::compute::v1;

// How a request names its sandbox: not at all, by id, or by carrying the
// whole DriverSandbox (which stages may rewrite).
enum class SandboxRef { kNone, kId, kMessage };

// X(Name, Request, Response, server_streaming, SandboxRef)
#define OWRAP_COMPUTE_DRIVER_RPCS(X)                                                                               \
  X(GetCapabilities, GetCapabilitiesRequest, GetCapabilitiesResponse, false, kNone)                                \
  X(GetGatewayListenerRequirements, GetGatewayListenerRequirementsRequest, GetGatewayListenerRequirementsResponse, \
    false, kNone)                                                                                                  \
  X(ValidateSandboxCreate, ValidateSandboxCreateRequest, ValidateSandboxCreateResponse, false, kMessage)           \
  X(GetSandbox, GetSandboxRequest, GetSandboxResponse, false, kId)                                                 \
  X(ListSandboxes, ListSandboxesRequest, ListSandboxesResponse, false, kNone)                                      \
  X(CreateSandbox, CreateSandboxRequest, CreateSandboxResponse, false, kMessage)                                   \
  X(StopSandbox, StopSandboxRequest, StopSandboxResponse, false, kId)                                              \
  X(StartSandbox, StartSandboxRequest, StartSandboxResponse, false, kId)                                           \
  X(DeleteSandbox, DeleteSandboxRequest, DeleteSandboxResponse, false, kId)                                        \
  X(WatchSandboxes, WatchSandboxesRequest, WatchSandboxesEvent, true, kNone)                                       \
  X(EnsureWorkspace, EnsureWorkspaceRequest, EnsureWorkspaceResponse, false, kNone)                                \
  X(DeleteWorkspace, DeleteWorkspaceRequest, DeleteWorkspaceResponse, false, kNone)

enum class Rpc {
#define OWRAP_RPC_ENUM(Name, Req, Resp, Streaming, Ref) k##Name,
  OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_RPC_ENUM)
#undef OWRAP_RPC_ENUM
};

#define OWRAP_RPC_COUNT(Name, Req, Resp, Streaming, Ref) +1
inline constexpr size_t kRpcCount = 0 OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_RPC_COUNT);
#undef OWRAP_RPC_COUNT

struct RpcInfo {
  Rpc rpc;
  std::string_view name;         // "CreateSandbox"
  std::string_view method_path;  // "/openshell.compute.v1.ComputeDriver/CreateSandbox"
  bool server_streaming;
  SandboxRef sandbox;
};

const std::array<RpcInfo, kRpcCount>& all_rpcs();
inline const RpcInfo& rpc_info(Rpc rpc) {
  return all_rpcs()[static_cast<size_t>(rpc)];
}
inline std::string_view rpc_name(Rpc rpc) {
  return rpc_info(rpc).name;
}
std::optional<Rpc> rpc_from_name(std::string_view name);

// The request and response types of one RPC, known at compile time.
template <Rpc R>
struct RpcTypes;
#define OWRAP_RPC_TYPES(Name, Req, Resp, Streaming, Ref) \
  template <>                                            \
  struct RpcTypes<Rpc::k##Name> {                        \
    using Request = v1::Req;                             \
    using Response = v1::Resp;                           \
  };
OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_RPC_TYPES)
#undef OWRAP_RPC_TYPES

// The response of `R`, from the Message a call holds: the call
// knows its RPC, so this is a static_cast, never a dynamic_cast.
template <Rpc R>
typename RpcTypes<R>::Response& response_as(google::protobuf::Message& m) {
  return static_cast<typename RpcTypes<R>::Response&>(m);
}

// The sandbox id a request of `rpc` names ("" when it names none).
std::string sandbox_id_of(Rpc rpc, const google::protobuf::Message& request);
// The DriverSandbox a request of `rpc` carries (ValidateSandboxCreate,
// CreateSandbox), or nullptr.
v1::DriverSandbox* sandbox_of(Rpc rpc, google::protobuf::Message& request);

}  // namespace owrap
