// --schema: the memory driver judges driver_config as one upstream OpenShell
// driver does (its key set, types and error texts), so tests and the demo see
// a real base driver's plan shaped by hooks, and its refusal of a mistake.
#pragma once

#include "compute_driver.pb.h"

#include <grpcpp/support/status.h>

#include <optional>
#include <string>

namespace owrap::memory {

// none: the memory driver's own fault block ({"fail": ..., "delay_ms": ...}).
enum class DriverSchema { none, kubernetes, docker, podman, vm };

std::optional<DriverSchema> parse_driver_schema(const std::string& name);
const char* schema_name(DriverSchema schema);

// The sandbox's template.driver_config (and what that driver checks with it,
// such as device ids against the GPU request), as the driver's own
// ValidateSandboxCreate and CreateSandbox would answer. OK for none.
grpc::Status check_driver_config(DriverSchema schema, const openshell::compute::v1::DriverSandbox& sandbox);

}  // namespace owrap::memory
