// Assembles one wrapper: delegate, pipeline stages, watch hub, services and
// the guarded socket, and runs it until SIGTERM/SIGINT.
#pragma once

#include "hooks/hook_chain.h"
#include "proxy/config.h"
#include "proxy/pipeline.h"

#include <boost/asio/io_context.hpp>

namespace owrap {

// Assembles the stages every wrapper runs today: the driver_config split
// (Validate, Create), the capabilities rewrite (GetCapabilities), and the
// [testing] delay when configured.
// The stages every wrapper has, in order: the config split, the hook chain
// (`chain` may be null), capabilities, and the [testing] delay.
void add_builtin_stages(Pipeline& pipeline, const WrapperConfig& config, boost::asio::io_context& io,
                        HookChain* chain = nullptr);
// "driver_config.<wrapper>" (nested) or "driver_config.<wrapper>" inside the
// delegate's block (inline): where hooks' request blocks live, for messages.
std::string request_config_path(const WrapperConfig& config);

// Returns the process exit code.
int run_wrapper(WrapperConfig config);

}  // namespace owrap
