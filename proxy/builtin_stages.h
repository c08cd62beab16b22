// The stages every wrapper has, each built from its configuration.
#pragma once

#include "call/stage.h"
#include "hooks/hook_chain.h"
#include "proxy/config.h"

#include <boost/asio/io_context.hpp>

namespace owrap {

// GetCapabilities: the wrapper's name, the delegate named in the version,
// the [capabilities] overrides.
// `chain` (may be null) is named in driver_version and learns the
// delegate's version for its hooks' requests.
Stage capabilities_stage(const WrapperConfig& config, HookChain* chain = nullptr);

// [testing]: suspends the configured RPCs for `delay` on an Asio timer of
// `io` and resumes them from its thread: a stand-in for a slow hook in
// tests and benchmarks.
Stage delay_stage(boost::asio::io_context& io, const TestingStageConfig& config);

}  // namespace owrap
