// What builtin hooks share: the Hook base of the synchronous ones, answers,
// and the JSON helpers that turn configuration and plans into RFC 6902
// patches.
#pragma once

#include "compute_driver.pb.h"
#include "hooks/builtin/builtins.h"
#include "hooks/hook.h"

#include <google/protobuf/struct.pb.h>
#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

// A builtin that answers at once: invoke() calls `done` before returning.
class SyncBuiltinHook : public Hook {
 public:
  SyncBuiltinHook(std::string name, std::string_view kind, PhaseSet phases)
      : Hook(std::move(name)), kind_(kind), phases_(phases) {}

  std::string transport() const override { return "builtin:" + kind_; }
  std::optional<PhaseSet> implemented_phases() const override { return phases_; }
  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options, HookDone done) override;

 protected:
  // One phase for one call; never throws (invoke() turns an escaped
  // exception into an INTERNAL failure all the same).
  virtual HookOutcome evaluate(const hookpb::HookRequest& request) = 0;

 private:
  std::string kind_;
  PhaseSet phases_;
};

PhaseSet phases_of(std::initializer_list<HookPhase> phases);
bool is_phase(const hookpb::HookRequest& request, HookPhase phase);

hookpb::HookResponse allow_response();
// `code` is a gRPC code name ("FAILED_PRECONDITION").
hookpb::HookResponse deny_response(std::string_view code, std::string reason);

// The hook's config table, or an empty one.
const toml::table& config_table(const HookSpec& spec);
// Joins configuration errors into the factory's Error, one per line.
Error config_error(const std::vector<std::string>& errors);

}  // namespace owrap
