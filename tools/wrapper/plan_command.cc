#include "tools/wrapper/plan_command.h"

#include "common/io_thread.h"
#include "common/log.h"
#include "compute_driver.grpc.pb.h"
#include "hooks/hook_factory.h"
#include "proxy/wrapper.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <thread>

namespace owrap {

namespace {

constexpr const char* kPlanUsage =
    "usage: openshell-driver-wrapper plan --config FILE.toml [--sandbox FILE|-] [--validate-delegate]\n";

std::string read_input(const std::string& path) {
  std::ostringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) return "";
    text << in.rdbuf();
  }
  return text.str();
}

// Asks each grpc hook for its manifest, so the plan uses what it declares;
// `out` (check-config's hooks) gets each answer.
// What each grpc hook said, into `out` when given; the error `run` would
// refuse to start with, if a manifest does not fit.
std::optional<std::string> describe_grpc_hooks(const std::vector<ConfiguredHook>& hooks, nlohmann::json* out) {
  auto answers = describe_grpc_hooks_now(hooks, std::chrono::milliseconds(1000));
  for (const DescribeAnswer& a : answers) {
    if (!out) continue;
    nlohmann::json d = hooks[a.hook].hook->describe();
    if (!a.status.ok()) d["error"] = a.status.error_message();
    (*out)[a.hook]["describe"] = d;
  }
  return first_misfit(hooks, answers);
}

grpc::Status validate_at_delegate(const WrapperConfig& config, const v1::DriverSandbox& sandbox) {
  auto delegate = make_delegate(config.delegate);
  auto started = delegate->start([] { return false; });
  if (!started) {
    delegate->stop(config.delegate.stop_grace);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "cannot start the delegate: " + started.error());
  }
  auto stub = v1::ComputeDriver::NewStub(delegate->channel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ValidateSandboxCreateRequest request;
  *request.mutable_sandbox() = sandbox;
  v1::ValidateSandboxCreateResponse response;
  grpc::Status s = stub->ValidateSandboxCreate(&ctx, request, &response);
  delegate->stop(config.delegate.stop_grace);
  return s;
}

}  // namespace

bool check_hooks(const WrapperConfig& config, nlohmann::json& config_json, std::string& error) {
  IoThread io;
  auto hooks = make_hooks(config.hooks.hooks, HookEnvironment{io.io(), config.name, nullptr});
  if (!hooks) {
    error = hooks.error();
    return false;
  }
  auto misfit = describe_grpc_hooks(hooks.value(), &config_json["hooks"]);
  // A builtin configured without `phases` runs all of its own.
  for (size_t i = 0; i < hooks->size(); i++) {
    config_json["hooks"][i]["phases"] = hook_spec_json(hooks.value()[i].spec)["phases"];
  }
  for (auto& h : hooks.value()) h.hook->stop();
  // `run` refuses to start with it: so does check-config.
  if (misfit) {
    error = *misfit;
    return false;
  }
  return true;
}

std::string printable_json(const nlohmann::json& doc) {
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

int run_plan(const std::vector<std::string>& args) {
  std::string config_path, sandbox_path;
  bool validate_delegate = false;
  for (size_t i = 0; i < args.size(); i++) {
    if (args[i] == "--validate-delegate") {
      validate_delegate = true;
    } else if ((args[i] == "--config" || args[i] == "--sandbox") && i + 1 < args.size()) {
      (args[i] == "--config" ? config_path : sandbox_path) = args[i + 1];
      i++;
    } else {
      std::cerr << "openshell-driver-wrapper plan: unknown or incomplete argument " << args[i] << "\n" << kPlanUsage;
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << kPlanUsage;
    return 2;
  }
  auto config = load_config(config_path);
  if (!config) {
    std::cerr << config.error() << "\n";
    return 2;
  }
  v1::DriverSandbox sandbox;
  sandbox.set_id("plan");
  if (!sandbox_path.empty()) {
    std::string text = read_input(sandbox_path);
    if (auto s = google::protobuf::util::JsonStringToMessage(text, &sandbox); !s.ok()) {
      std::cerr << "openshell-driver-wrapper plan: " << sandbox_path
                << " is not a DriverSandbox in protobuf JSON: " << s.message() << "\n";
      return 2;
    }
  }
  Logger::instance().set_level(LogLevel::kWarn);
  IoThread io;
  auto hooks = make_hooks(config->hooks.hooks, HookEnvironment{io.io(), config->name, nullptr});
  if (!hooks) {
    std::cerr << hooks.error() << "\n";
    return 2;
  }
  // A misfit hook fails each of its invocations; the plan shows that.
  (void)describe_grpc_hooks(hooks.value(), nullptr);
  HookChain chain(
      HookChainOptions{config->name, config->delegate.name, request_config_path(config.value()), config->hooks},
      std::move(hooks.value()));
  chain.start();

  DriverConfigSplitter splitter(
      ConfigSplitOptions{config->name, config->delegate.name, config->config_mode, chain.claimed_keys()});
  google::protobuf::Struct wrapper_block;
  if (grpc::Status s = splitter.split(*sandbox.mutable_spec()->mutable_template_(), wrapper_block); !s.ok()) {
    std::cout << printable_json({{"result", "refused"}, {"error", s.error_message()}}) << "\n";
    return 1;
  }
  std::promise<PlanReport> promise;
  chain.plan(sandbox, wrapper_block, [&promise](PlanReport r) { promise.set_value(std::move(r)); });
  PlanReport report = promise.get_future().get();
  chain.stop();

  nlohmann::json out = {{"plan", report.plan}, {"hooks", nlohmann::json::array()}};
  for (const auto& v : report.hooks) {
    out["hooks"].push_back({{"hook", v.hook},
                            {"phase", v.phase},
                            {"verdict", v.verdict},
                            {"reason", v.reason},
                            {"changed", v.changed_paths}});
  }
  out["result"] = report.status.ok() ? "allowed" : "refused";
  if (!report.status.ok()) out["error"] = report.status.error_message();
  if (report.status.ok() && validate_delegate) {
    grpc::Status s = validate_at_delegate(config.value(), report.sandbox);
    out["delegate"] = s.ok() ? nlohmann::json{{"verdict", "valid"}}
                             : nlohmann::json{{"verdict", "invalid"}, {"error", s.error_message()}};
    if (!s.ok()) out["result"] = "refused";
  }
  std::cout << printable_json(out) << "\n";
  return out["result"] == "allowed" ? 0 : 1;
}

}  // namespace owrap
