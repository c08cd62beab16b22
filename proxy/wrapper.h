// Assembles one wrapper: delegate, pipeline stages, watch hub, services and
// the guarded socket, and runs it until SIGTERM/SIGINT.
#pragma once

#include "proxy/config.h"
#include "proxy/pipeline.h"

#include <boost/asio/io_context.hpp>

namespace owrap {

// Assembles the stages every wrapper runs today: the driver_config split
// (Validate, Create), the capabilities rewrite (GetCapabilities), and the
// [testing] delay when configured.
void add_builtin_stages(Pipeline& pipeline, const WrapperConfig& config, boost::asio::io_context& io);

// Returns the process exit code.
int run_wrapper(WrapperConfig config);

}  // namespace owrap
