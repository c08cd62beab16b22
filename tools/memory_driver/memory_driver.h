// openshell-driver-memory: an in-memory compute driver with real semantics,
// used by the tests, the benchmarks and the demo. Faults come from the
// request's own driver block ({"fail": {RPC: CODE}, "delay_ms": {RPC: MS}});
// RPCs that carry no sandbox take them from --fail/--delay.
#pragma once

#include "compute_driver.grpc.pb.h"
#include "memory_state.pb.h"
#include "tools/memory_driver/callback_watch_fanout.h"
#include "tools/memory_driver/driver_config_schema.h"

#include <grpcpp/generic/async_generic_service.h>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace owrap::memory {

namespace v1 = openshell::compute::v1;

struct Faults {
  std::map<std::string, grpc::StatusCode> fail;
  std::map<std::string, std::chrono::milliseconds> delay;
};

struct Options {
  std::string driver_name = "memory";
  std::string driver_version = "0.1.0";
  std::string default_image = "ghcr.io/openshell/sandbox:memory";
  bool gateway_manages_lifecycle = false;
  std::string state_file;
  std::string record_file;
  // Also one record line when a call arrives (before its delay): a test can
  // wait until a slow call is surely in flight instead of sleeping.
  bool record_arrivals = false;
  Faults global_faults;
  // "loopback", "default-route" or "exact:ADDR"; none means UNIMPLEMENTED.
  std::vector<std::string> listener_requirements;
  size_t watch_queue_capacity = 65536;
  // WatchSandboxes sends its response headers with the first event (as
  // grpc-go and grpcio servers do) instead of at once.
  bool lazy_headers = false;
  // A careless driver: ValidateSandboxCreate echoes the sandbox token in its
  // response metadata and refuses with it in the message and error details.
  bool echo_token = false;
  // RPCs answered with bytes that do not parse as their response type (a
  // corrupt or truncated reply), to test what a proxy makes of one.
  std::set<std::string> reply_garbage;
  // --schema: driver_config is judged as that upstream driver's (faults then
  // come from --fail/--delay only); none keeps the memory driver's fault block.
  DriverSchema schema = DriverSchema::none;
};

// Parses a --reply-garbage value (an RPC name).
bool parse_reply_garbage_flag(const std::string& value, Options& out, std::string& error);

// Parses --fail RPC=CODE / --delay RPC=MS values.
bool parse_fault_flag(const std::string& value, bool is_delay, Faults& out, std::string& error);

class MemoryDriver final : public v1::ComputeDriver::CallbackService {
 public:
  MemoryDriver(boost::asio::io_context& io, Options options);
  ~MemoryDriver() override;

  // Loads --state-file, if any. Returns an error message on a corrupt file.
  std::string load_state();
  // Serves the test extension service (methods this contract lacks), so the
  // wrapper's pass-through of unknown methods can be proven end to end.
  grpc::CallbackGenericService* extension_service() { return &extension_; }
  void shutdown_watchers();
  // Unary calls received and not yet answered.
  long active_calls() const { return active_calls_.load(); }

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

  class Call;
  class Recorder;

 private:
  class ExtensionService : public grpc::CallbackGenericService {
    grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;
  };

  using Work = std::function<grpc::Status()>;
  grpc::ServerUnaryReactor* respond(grpc::CallbackServerContext* ctx, const char* rpc, std::string sandbox_id,
                                    const Faults& faults, Work work);
  // Faults stored with an existing sandbox, else the global ones.
  Faults faults_for(const std::string& sandbox_id);
  grpc::Status check_sandbox(const v1::DriverSandbox& sandbox, Faults& faults) const;
  grpc::Status set_running(const std::string& id, bool running, const char* rpc);
  void emit_snapshot(const v1::DriverSandbox& sandbox);
  void emit_platform(const std::string& id, const std::string& reason, const std::string& message);
  void persist();  // mu_ held

  boost::asio::io_context& io_;
  Options options_;
  CallbackWatchFanout fanout_;
  ExtensionService extension_;
  std::unique_ptr<Recorder> recorder_;

  std::mutex mu_;
  std::map<std::string, v1::DriverSandbox> sandboxes_;
  std::set<std::string> workspaces_;
  uint64_t next_instance_ = 1;
  std::atomic<long> active_calls_{0};
};

}  // namespace owrap::memory
