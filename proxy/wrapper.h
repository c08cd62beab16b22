// Assembles one wrapper: delegate, pipeline stages, watch hub, services and
// the guarded socket, and runs it until SIGTERM/SIGINT.
#pragma once

#include "proxy/config.h"
#include "proxy/pipeline.h"

namespace owrap {

// The stages every wrapper runs today: the driver_config split (Validate,
// Create) and the capabilities rewrite (GetCapabilities).
void add_builtin_stages(Pipeline& pipeline, const WrapperConfig& config);

// Returns the process exit code.
int run_wrapper(WrapperConfig config);

}  // namespace owrap
