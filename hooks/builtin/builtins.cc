#include "hooks/builtin/builtins.h"

namespace owrap {

// Each defined in its own file (hooks/builtin/<kind>.cc).
BuiltinKind defaults_builtin();
BuiltinKind policy_builtin();
BuiltinKind quota_builtin();

const std::vector<BuiltinKind>& builtin_kinds() {
  static const std::vector<BuiltinKind> kinds = {
      defaults_builtin(),
      policy_builtin(),
      quota_builtin(),
  };
  return kinds;
}

namespace {
const BuiltinKind* find_kind(std::string_view kind) {
  for (const auto& k : builtin_kinds()) {
    if (k.kind == kind) return &k;
  }
  return nullptr;
}
}  // namespace

std::optional<PhaseSet> builtin_phases(std::string_view kind) {
  const BuiltinKind* k = find_kind(kind);
  if (k == nullptr) return std::nullopt;
  return k->phases;
}

std::string builtin_kind_list() {
  std::string out;
  for (const auto& k : builtin_kinds()) {
    if (!out.empty()) out += ", ";
    out += k.kind;
  }
  return out;
}

std::string unknown_builtin_message(std::string_view kind) {
  return "unknown builtin \"" + std::string(kind) + "\"; known: " + builtin_kind_list();
}

Result<std::unique_ptr<Hook>> make_builtin(const HookSpec& spec, const BuiltinContext& ctx) {
  const BuiltinKind* k = find_kind(spec.builtin);
  if (k == nullptr) return Error{unknown_builtin_message(spec.builtin)};
  PhaseSet extra = spec.phases & ~k->phases;
  if (extra.any()) {
    return Error{"builtin \"" + spec.builtin + "\" does not implement " + phase_list(extra) + " (it implements " +
                 phase_list(k->phases) + ")"};
  }
  return k->factory(spec, ctx);
}

}  // namespace owrap
