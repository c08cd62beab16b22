// The stages every wrapper has, each built from its configuration.
#pragma once

#include "call/stage.h"
#include "proxy/config.h"

#include <boost/asio/io_context.hpp>

namespace owrap {

// GetCapabilities: the wrapper's name, the delegate named in the version,
// the [capabilities] overrides.
Stage capabilities_stage(const WrapperConfig& config);

// [testing]: suspends the configured RPCs for `delay` on an Asio timer of
// `io` and resumes them from its thread: a stand-in for a slow hook in
// tests and benchmarks.
Stage delay_stage(boost::asio::io_context& io, const TestingStageConfig& config);

}  // namespace owrap
