#include "proxy/wrapper.h"

#include "common/io_thread.h"
#include "common/serve.h"
#include "common/signals.h"
#include "hooks/hook_factory.h"
#include "proxy/builtin_stages.h"
#include "proxy/delegate_lister.h"
#include "proxy/frame_relay.h"
#include "proxy/generic_relay.h"
#include "proxy/unary_server.h"
#include "proxy/watch_hub.h"

#include <cstring>
#include <filesystem>
#include <thread>

namespace owrap {

void add_builtin_stages(Pipeline& pipeline, const WrapperConfig& config, boost::asio::io_context& io,
                        HookChain* chain) {
  auto splitter = std::make_shared<DriverConfigSplitter>(ConfigSplitOptions{
      config.name, config.delegate.name, config.config_mode, chain ? chain->claimed_keys() : std::set<std::string>{}});
  pipeline.add(config_split_stage(splitter));
  if (chain) {
    for (Stage& stage : chain->stages()) pipeline.add(std::move(stage));
  }
  pipeline.add(capabilities_stage(config, chain));
  if (config.testing.delay.count() > 0) pipeline.add(delay_stage(io, config.testing));
}

std::string request_config_path(const WrapperConfig& config) {
  return DriverConfigSplitter(ConfigSplitOptions{config.name, config.delegate.name, config.config_mode, {}})
      .block_path();
}

namespace {

// A grpc hook that answers Describe at start with a manifest this
// configuration cannot use is a configuration error, fatal like any other;
// one that does not answer yet is not (its calls follow its policy).
Result<bool> check_grpc_manifests(const std::vector<ConfiguredHook>& hooks) {
  auto answers = describe_grpc_hooks_now(hooks, std::chrono::milliseconds(0));
  if (auto misfit = first_misfit(hooks, answers)) return Error{*misfit};
  for (const DescribeAnswer& a : answers) {
    const std::string& name = hooks[a.hook].spec.name;
    if (!a.status.ok()) {
      log_warn("grpc hook does not answer Describe at start; serving anyway, its calls follow its failure policy",
               {{"hook", name}, {"error", a.status.error_message()}});
    }
  }
  return true;
}

// The chain's after_ready and the hooks counting from the watch (quota)
// see every event the hub publishes.
std::function<void(const WatchEvent&)> watch_observer(HookChain& chain, std::shared_ptr<SandboxFeed> feed) {
  if (chain.hooks().empty()) return nullptr;
  return [&chain, feed = std::move(feed)](const WatchEvent& event) {
    if (event.has_sandbox()) chain.sandbox_reported(event.sandbox().sandbox());
    if (event.has_deleted()) chain.sandbox_deleted(event.deleted().sandbox_id());
    feed->publish(event);
  };
}

std::function<void(bool)> watch_liveness(HookChain& chain, std::shared_ptr<SandboxFeed> feed) {
  if (chain.hooks().empty()) return nullptr;
  return [feed = std::move(feed)](bool live) { feed->set_live(live); };
}

}  // namespace

int run_wrapper(WrapperConfig config) {
  Logger::instance().set_level(config.log_level);
  // First, before any thread exists: SIGTERM/SIGINT are honoured from here
  // on, start-up included; SIGHUP/SIGUSR1/SIGUSR2 never kill the wrapper.
  SignalWatcher signals("wrapper " + config.name);
  // Everything that can be known about the serving path is checked before
  // the delegate is launched: a doomed start must not launch a base driver.
  if (auto ok = check_serving_socket(config, config.socket_source); !ok) {
    log_error("cannot serve", {{"error", ok.error()}});
    return 2;
  }
  if (auto ok = GuardedSocket::check(config.socket); !ok) {
    log_error("cannot serve", {{"error", ok.error()}});
    return 1;
  }
  if (config.delegate.runtime_parent.empty()) {
    config.delegate.runtime_parent = std::filesystem::path(config.socket).parent_path().string();
  }

  IoThread io_thread;
  boost::asio::io_context& io = io_thread.io();

  std::unique_ptr<Delegate> delegate = make_delegate(config.delegate);
  // Hooks are built before the delegate is launched: a configuration error
  // must not leave a base driver behind.
  // Every call runs on these queues; they outlive the server.
  CompletionQueues queues(config.worker_threads);
  DelegateLister lister(*delegate, queues);
  // Outlives the hooks and the hub: the hub feeds it, hooks subscribe.
  auto feed = std::make_shared<SandboxFeed>();
  auto hooks = make_hooks(config.hooks.hooks, HookEnvironment{io, config.name, lister.as_function(), feed});
  if (hooks) {
    if (auto fits = check_grpc_manifests(hooks.value()); !fits) hooks = Error{fits.error()};
  }
  if (!hooks) {
    log_error("cannot build the hook chain", {{"error", hooks.error()}});
    io_thread.stop();
    return 1;
  }
  HookChain chain(HookChainOptions{config.name, config.delegate.name, request_config_path(config), config.hooks},
                  std::move(hooks.value()));
  // The socket is bound only once the delegate answers: the gateway calls
  // GetCapabilities once at start-up and aborts on failure.
  auto started = delegate->start([&signals] { return signals.termination() != 0; });
  if (!started || signals.termination() != 0) {
    bool asked = signals.termination() != 0;
    if (asked) {
      log_info("stopping during start-up", {{"delegate", config.delegate.name}});
    } else {
      log_error("cannot start the delegate", {{"delegate", config.delegate.name}, {"error", started.error()}});
    }
    delegate->stop(config.delegate.stop_grace);
    io_thread.stop();
    return asked ? 0 : 1;
  }

  chain.start();
  if (!chain.hooks().empty()) log_info("hook chain", {{"wrapper", config.name}, {"chain", chain.effective_chain()}});
  Pipeline pipeline;
  add_builtin_stages(pipeline, config, io, &chain);
  AsyncComputeDriver service;
  UnaryServer unary(config.name, *delegate, pipeline, service, queues);
  WatchHub hub(io, *delegate,
               WatchHubOptions{WatchFanoutOptions{config.watch_queue_capacity, config.watch_finish_grace},
                               config.resync_timeout, watch_observer(chain, feed), watch_liveness(chain, feed)},
               queues);
  GenericRelay relay(config.name, *delegate, queues);
  std::optional<FrameRelay> frames;
  ConnectionHandoff handoff;
  if (config.relay == RelayMode::kFrames) {
    frames.emplace(
        FrameRelayOptions{config.name, *delegate, pipeline, queues.tracker(), [&queues] { return queues.any(); }});
    handoff = [&frames](UniqueFd fd) { frames->adopt(std::move(fd)); };
  }
  auto server = UdsGrpcServer::start(
      config.socket, {&service}, nullptr, "wrapper " + config.name,
      [&](grpc::ServerBuilder& builder) {
        relay.register_with(builder);
        queues.add_to(builder);
      },
      handoff);
  if (!server) {
    frames.reset();
    log_error("cannot serve", {{"error", server.error()}});
    lister.cancel_all();
    queues.stop();
    chain.stop();
    delegate->stop(config.delegate.stop_grace);
    io_thread.stop();
    return 1;
  }
  if (frames) frames->set_server(server.value()->server());
  queues.start();
  unary.start();
  hub.listen(service);
  relay.start();
  hub.start();
  log_info("wrapper serving", {{"wrapper", config.name},
                               {"socket", config.socket},
                               {"delegate", config.delegate.name},
                               {"pid", ::getpid()},
                               {"version", OWRAP_VERSION}});

  int sig = signals.wait_for_termination();
  log_info("shutting down", {{"signal", strsignal(sig)}, {"grace_ms", config.shutdown_grace.count()}});
  // Watchers are long-lived: end them now so the gateway reconnects, and
  // give unary calls the grace to finish.
  hub.stop(grpc::Status(grpc::StatusCode::UNAVAILABLE, "wrapper \"" + config.name + "\" is shutting down"));
  // New calls are refused from here on; those in flight get the grace.
  // gRPC's own grace would also wait for idle connections (the gateway's
  // stays open), so the grace is ours and gRPC's is zero.
  queues.tracker().start_draining();
  server.value()->stop_accepting();
  if (!queues.tracker().wait_inactive(std::chrono::steady_clock::now() + config.shutdown_grace)) {
    log_warn("calls still running after the shutdown grace; cancelling them",
             {{"active", queues.tracker().active()}, {"grace_ms", config.shutdown_grace.count()}});
  }
  // The front goes first: its gateway streams are reset and its delegate
  // streams cancelled; its socket pairs close, which the server sees as
  // the gateway's connections going away.
  if (frames) frames->stop();
  server.value()->shutdown(std::chrono::milliseconds(0));
  lister.cancel_all();
  queues.stop();
  // Calls are gone; what hooks still run (after-phases) is cancelled.
  chain.stop();
  delegate->stop(config.delegate.stop_grace);
  io_thread.stop();
  log_info("stopped", {{"wrapper", config.name}});
  return 0;
}

}  // namespace owrap
