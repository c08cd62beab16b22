// The ComputeDriver service the gateway talks to. One short handler per
// RPC: each hands its call to UnaryCall (pipeline + delegate) or, for
// WatchSandboxes, to the WatchHub.
#pragma once

#include "compute_driver.grpc.pb.h"
#include "proxy/unary_call.h"
#include "proxy/watch_hub.h"

namespace owrap {

class WrapperService final : public v1::ComputeDriver::CallbackService {
 public:
  WrapperService(Delegate& delegate, const Pipeline& pipeline, WatchHub& hub);

  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext*, const v1::GetCapabilitiesRequest*,
                                            v1::GetCapabilitiesResponse*) override;
  grpc::ServerUnaryReactor* GetGatewayListenerRequirements(grpc::CallbackServerContext*,
                                                           const v1::GetGatewayListenerRequirementsRequest*,
                                                           v1::GetGatewayListenerRequirementsResponse*) override;
  grpc::ServerUnaryReactor* ValidateSandboxCreate(grpc::CallbackServerContext*, const v1::ValidateSandboxCreateRequest*,
                                                  v1::ValidateSandboxCreateResponse*) override;
  grpc::ServerUnaryReactor* GetSandbox(grpc::CallbackServerContext*, const v1::GetSandboxRequest*,
                                       v1::GetSandboxResponse*) override;
  grpc::ServerUnaryReactor* ListSandboxes(grpc::CallbackServerContext*, const v1::ListSandboxesRequest*,
                                          v1::ListSandboxesResponse*) override;
  grpc::ServerUnaryReactor* CreateSandbox(grpc::CallbackServerContext*, const v1::CreateSandboxRequest*,
                                          v1::CreateSandboxResponse*) override;
  grpc::ServerUnaryReactor* StopSandbox(grpc::CallbackServerContext*, const v1::StopSandboxRequest*,
                                        v1::StopSandboxResponse*) override;
  grpc::ServerUnaryReactor* StartSandbox(grpc::CallbackServerContext*, const v1::StartSandboxRequest*,
                                         v1::StartSandboxResponse*) override;
  grpc::ServerUnaryReactor* DeleteSandbox(grpc::CallbackServerContext*, const v1::DeleteSandboxRequest*,
                                          v1::DeleteSandboxResponse*) override;
  grpc::ServerWriteReactor<v1::WatchSandboxesEvent>* WatchSandboxes(grpc::CallbackServerContext*,
                                                                    const v1::WatchSandboxesRequest*) override;
  grpc::ServerUnaryReactor* EnsureWorkspace(grpc::CallbackServerContext*, const v1::EnsureWorkspaceRequest*,
                                            v1::EnsureWorkspaceResponse*) override;
  grpc::ServerUnaryReactor* DeleteWorkspace(grpc::CallbackServerContext*, const v1::DeleteWorkspaceRequest*,
                                            v1::DeleteWorkspaceResponse*) override;

 private:
  std::unique_ptr<v1::ComputeDriver::Stub> stub_;
  UnaryRelay relay_;
  WatchHub& hub_;
};

}  // namespace owrap
