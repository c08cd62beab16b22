#include "hooks/hook_factory.h"

#include "hooks/grpc_hook.h"

namespace owrap {

namespace {

Result<std::unique_ptr<Hook>> make_hook(HookSpec& spec, const HookEnvironment& env, const std::string& key) {
  switch (spec.transport) {
    case HookTransport::kGrpc:
      // Its manifest is checked once Describe answers; a hook that is down
      // at start is not fatal (calls follow its failure policy).
      return std::unique_ptr<Hook>(std::make_unique<GrpcHook>(spec));
    case HookTransport::kBuiltin:
    case HookTransport::kExec:
      break;
  }
  return Error{key + ".type: this transport is not built yet"};
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

}  // namespace owrap
