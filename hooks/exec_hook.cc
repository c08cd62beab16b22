#include "hooks/exec_hook.h"

#include "common/result.h"
#include "hooks/exec_invocation.h"
#include "hooks/exec_scheduler.h"

#include <google/protobuf/util/json_util.h>
#include <boost/asio/post.hpp>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <future>

namespace owrap {

namespace {

constexpr const char* kStopping = "the wrapper is stopping";

// Writing a request to a hook that exited without reading it must be EPIPE,
// not a signal that ends the wrapper (whose SignalWatcher ignores SIGPIPE
// already; a library user may not have).
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) std::signal(SIGPIPE, SIG_IGN);
  });
}

std::shared_ptr<const ExecHookConfig> make_config(const HookSpec& spec) {
  auto config = std::make_shared<ExecHookConfig>();
  config->hook = spec.name;
  config->command = spec.command;
  config->env = ExecHook::scrubbed_env(spec.env);
  config->max_reply_bytes = spec.max_reply_bytes;
  config->max_in_flight = spec.max_in_flight;
  return config;
}

Result<std::string> request_json(const hookpb::HookRequest& request) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(request, &json, options);
  if (!status.ok()) return Error{"cannot encode the request: " + std::string(status.message())};
  json += '\n';  // one line: a hook may read it with readline()
  return json;
}

}  // namespace

std::map<std::string, std::string> ExecHook::scrubbed_env(const std::map<std::string, std::string>& configured) {
  std::map<std::string, std::string> env;
  for (const char* name : {"PATH", "HOME", "LANG"}) {
    if (const char* value = std::getenv(name)) env[name] = value;
  }
  for (const auto& [k, v] : configured) env[k] = v;
  return env;
}

ExecHook::ExecHook(const HookSpec& spec, boost::asio::io_context& io)
    : Hook(spec.name),
      io_(io),
      timeout_(spec.timeout),
      config_(make_config(spec)),
      scheduler_(std::make_shared<ExecScheduler>(spec.max_in_flight)) {
  ignore_sigpipe();
}

ExecHook::~ExecHook() {
  stop();
}

void ExecHook::invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options, HookDone done) {
  auto json = request_json(*request);
  if (!json) {
    done(HookOutcome::failed(grpc::StatusCode::INTERNAL, json.error()));
    return;
  }
  auto env = config_->env;
  if (!request->traceparent().empty()) env["TRACEPARENT"] = request->traceparent();
  // A caller that set no deadline gets the hook's own timeout.
  auto deadline = options.deadline;
  if (deadline == std::chrono::steady_clock::time_point{}) deadline = std::chrono::steady_clock::now() + timeout_;
  auto invocation = std::make_shared<ExecInvocation>(io_, config_, std::move(json.value()), std::move(env), deadline,
                                                     std::move(done));
  std::unique_lock<std::mutex> lock(mu_);
  if (stopped_) {
    lock.unlock();
    invocation->abort(grpc::StatusCode::CANCELLED, kStopping);
    return;
  }
  boost::asio::post(
      io_, [scheduler = scheduler_, invocation, cancel = options.cancel] { scheduler->submit(invocation, *cancel); });
}

void ExecHook::stop() {
  std::lock_guard<std::mutex> stopping(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  run_on_io_and_wait([scheduler = scheduler_] { scheduler->stop_all(); });
}

void ExecHook::run_on_io_and_wait(const std::function<void()>& f) {
  if (io_.get_executor().running_in_this_thread() || io_.stopped()) {
    f();
    return;
  }
  // Whoever gets there first runs it: the io thread, or this one if the io
  // thread stopped before reaching it.
  auto claimed = std::make_shared<std::atomic<bool>>(false);
  auto ran = std::make_shared<std::promise<void>>();
  auto finished = ran->get_future();
  boost::asio::post(io_, [f, claimed, ran] {
    if (claimed->exchange(true)) return;
    f();
    ran->set_value();
  });
  while (finished.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
    if (io_.stopped() && !claimed->exchange(true)) {
      f();
      return;
    }
  }
}

}  // namespace owrap
