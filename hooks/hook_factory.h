// Builds each configured hook with its transport, and checks what needs
// the transport to know: a builtin's phases and configuration. Every error
// names its key (hooks[i]...) and stops start-up.
#pragma once

#include "common/result.h"
#include "compute_driver.pb.h"
#include "hooks/hook_chain.h"
#include "hooks/sandbox_feed.h"

#include <boost/asio/io_context.hpp>

#include <functional>
#include <optional>
#include <vector>

namespace owrap {

struct HookEnvironment {
  boost::asio::io_context& io;  // exec hooks' spawning, pipes and reaping
  std::string wrapper_name;
  // The delegate's ListSandboxes, asynchronously (the quota builtin); done
  // runs once, by the deadline at the latest. Empty without a delegate.
  using ListDone = std::function<void(grpc::Status, std::vector<openshell::compute::v1::DriverSandbox>)>;
  using ListFn = std::function<void(std::chrono::steady_clock::time_point deadline, ListDone done)>;
  ListFn list_sandboxes;
  // Fed by the wrapper's WatchHub (the quota builtin counts from it); null
  // without a watch.
  std::shared_ptr<SandboxFeed> sandbox_feed = nullptr;
};

Result<std::vector<ConfiguredHook>> make_hooks(const std::vector<HookSpec>& specs, const HookEnvironment& env);

// What one grpc hook said when asked for its manifest now.
struct DescribeAnswer {
  size_t hook;          // index into the hooks
  grpc::Status status;  // OK, why it did not answer, or why its manifest does not fit
  bool misfit;          // it answered with a manifest this configuration cannot use
};
// Asks every grpc hook for its manifest, all at once, each within its
// connect timeout plus `slack` (start-up, check-config and plan all ask
// this way).
std::vector<DescribeAnswer> describe_grpc_hooks_now(const std::vector<ConfiguredHook>& hooks,
                                                    std::chrono::milliseconds slack);
// The first answer whose manifest this configuration cannot use, as the
// error start-up and check-config both refuse with:
// `hooks[2] ("py"): does not implement the configured phases ...`.
std::optional<std::string> first_misfit(const std::vector<ConfiguredHook>& hooks,
                                        const std::vector<DescribeAnswer>& answers);

}  // namespace owrap
