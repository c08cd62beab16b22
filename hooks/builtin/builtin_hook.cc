#include "hooks/builtin/builtin_hook.h"

#include <exception>

namespace owrap {

void SyncBuiltinHook::invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options,
                             HookDone done) {
  // Made in place and handed on: an outcome holds a response and two
  // optionals, and each move of it costs.
  auto answer = [&]() -> HookOutcome {
    try {
      return evaluate(*request);
    } catch (const std::exception& e) {
      return HookOutcome::failed(grpc::StatusCode::INTERNAL, std::string("builtin hook error: ") + e.what());
    }
  };
  done(answer());
}

PhaseSet phases_of(std::initializer_list<HookPhase> phases) {
  PhaseSet set;
  for (HookPhase p : phases) set.set(static_cast<size_t>(p));
  return set;
}

bool is_phase(const hookpb::HookRequest& request, HookPhase phase) {
  return request.phase() == phase_name(phase);
}

hookpb::HookResponse allow_response() {
  hookpb::HookResponse r;
  r.set_allowed(true);
  return r;
}

hookpb::HookResponse deny_response(std::string_view code, std::string reason) {
  hookpb::HookResponse r;
  r.set_allowed(false);
  r.set_status_code(std::string(code));
  r.set_reason(std::move(reason));
  return r;
}

const toml::table& config_table(const HookSpec& spec) {
  static const toml::table empty;
  return spec.config_toml ? *spec.config_toml : empty;
}

Error config_error(const std::vector<std::string>& errors) {
  std::string all;
  for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
  return Error{all};
}

}  // namespace owrap
