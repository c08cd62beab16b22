#include "hooks/hook_factory.h"

#include "hooks/builtin/builtins.h"
#include "hooks/exec_hook.h"
#include "hooks/grpc_hook.h"

#include <future>
#include <utility>

namespace owrap {

namespace {

Result<std::unique_ptr<Hook>> make_builtin_hook(HookSpec& spec, const HookEnvironment& env, const std::string& key) {
  auto phases = builtin_phases(spec.builtin);
  if (!phases) return Error{key + ".builtin: " + unknown_builtin_message(spec.builtin)};
  if (spec.phases.none()) spec.phases = *phases;
  PhaseSet extra = spec.phases & ~*phases;
  if (extra.any()) {
    return Error{key + ".phases: builtin \"" + spec.builtin + "\" does not implement " + phase_list(extra) +
                 " (it implements " + phase_list(*phases) + ")"};
  }
  return make_builtin(spec, BuiltinContext{env.list_sandboxes, env.wrapper_name, env.sandbox_feed});
}

Result<std::unique_ptr<Hook>> make_hook(HookSpec& spec, const HookEnvironment& env, const std::string& key) {
  switch (spec.transport) {
    case HookTransport::kGrpc:
      // Its manifest is checked once Describe answers; a hook that is down
      // at start is not fatal (calls follow its failure policy).
      return std::unique_ptr<Hook>(std::make_unique<GrpcHook>(spec));
    case HookTransport::kBuiltin:
      return make_builtin_hook(spec, env, key);
    case HookTransport::kExec:
      return std::unique_ptr<Hook>(std::make_unique<ExecHook>(spec, env.io));
  }
  return Error{key + ".type: unknown transport"};
}

}  // namespace

Result<std::vector<ConfiguredHook>> make_hooks(const std::vector<HookSpec>& specs, const HookEnvironment& env) {
  std::vector<ConfiguredHook> hooks;
  std::string errors;
  for (size_t i = 0; i < specs.size(); i++) {
    HookSpec spec = specs[i];
    auto hook = make_hook(spec, env, "hooks[" + std::to_string(i) + "]");
    if (!hook) {
      errors += (errors.empty() ? "" : "\n") + hook.error();
      continue;
    }
    hooks.push_back(ConfiguredHook{std::move(spec), std::move(hook.value())});
  }
  if (!errors.empty()) return Error{errors};
  return hooks;
}

std::vector<DescribeAnswer> describe_grpc_hooks_now(const std::vector<ConfiguredHook>& hooks,
                                                    std::chrono::milliseconds slack) {
  // All at once: hooks that hang would otherwise delay start-up by one
  // connect timeout each.
  std::vector<std::pair<size_t, std::future<DescribeAnswer>>> asked;
  for (size_t i = 0; i < hooks.size(); i++) {
    auto* hook = dynamic_cast<GrpcHook*>(hooks[i].hook.get());
    if (hook == nullptr) continue;
    auto timeout = hooks[i].spec.connect_timeout + slack;
    asked.emplace_back(i, std::async(std::launch::async, [hook, i, timeout] {
                         grpc::Status s = hook->describe_now(timeout);
                         auto problem = hook->describe_problem();
                         return DescribeAnswer{i, problem ? *problem : s, problem.has_value()};
                       }));
  }
  std::vector<DescribeAnswer> answers;
  for (auto& [i, answer] : asked) answers.push_back(answer.get());
  return answers;
}

std::optional<std::string> first_misfit(const std::vector<ConfiguredHook>& hooks,
                                        const std::vector<DescribeAnswer>& answers) {
  for (const DescribeAnswer& a : answers) {
    if (!a.misfit) continue;
    return "hooks[" + std::to_string(a.hook) + "] (\"" + hooks[a.hook].spec.name + "\"): " + a.status.error_message();
  }
  return std::nullopt;
}

}  // namespace owrap
