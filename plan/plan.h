// The plan: what a ValidateSandboxCreate or CreateSandbox becomes before it
// reaches the delegate. Prepare hooks shape it with RFC 6902 patches, one
// hook's patch set at a time, each all or nothing; validate hooks judge the
// result and see who set what. Every patch is checked against the safety
// rules (docs/hooks.md "Protected paths" and "Ownership"): driver-owned and
// secret fields and the operator's extra prefixes are never written, a hook
// never silently undoes another's change, and the result must still be a
// DriverSandbox. The original request is changed only by write_back(), and
// only where the plan changed.
#pragma once

#include "common/result.h"
#include "compute_driver.pb.h"
#include "plan/owners.h"
#include "plan/patch_session.h"
#include "plan/protection.h"

#include <google/protobuf/arena.h>
#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace owrap {

// Per hook, from its [[hooks]] entry and the wrapper's settings.
struct PatchRules {
  // Operator-configured JSON pointers protected like driver-owned fields,
  // e.g. "/spec/template/labels/acme.com~1owner". A token ending in `*`
  // matches every key starting with the rest ("/spec/template/labels/acme.com~1*").
  std::vector<std::string> extra_protected;
  size_t max_patches = 32;
  size_t max_bytes = 1 << 20;  // the serialized size of one hook's patch array
  // extra_protected made into rules once (the chain does, at start); made
  // per apply() when null.
  std::shared_ptr<const Protection> protection;
  // Patch the plan's JSON form even where the message could be patched
  // directly (tests hold the two to the same results).
  bool json_only = false;
  // Keep each written value in the change log (PlanChange::value); only
  // debug lines show it, and copying it is a good part of a patch's cost.
  bool keep_values = true;
};

class Plan {
 public:
  // The plan for a request's sandbox (after the driver_config split). The
  // view has every secret field removed (by the field option) and every
  // OPENSHELL_SANDBOX_TOKEN* entry removed from spec.environment and
  // spec.template.environment; unknown fields are not in it either.
  static Result<Plan> from(const openshell::compute::v1::DriverSandbox& sandbox);

  // What hooks are shown: the plan as the hooks so far left it.
  const openshell::compute::v1::DriverSandbox& view() const { return *current_; }
  // The same view, shared: it never changes (a patch makes a new one), so
  // a hook's request can hold it instead of a copy.
  std::shared_ptr<const openshell::compute::v1::DriverSandbox> shared_view() const { return current_; }
  // The view before any hook changed it (what activation is judged on).
  const openshell::compute::v1::DriverSandbox& original() const { return *base_; }
  // The same as protobuf JSON (proto field names, no defaults): always
  // protobuf's form of view(), never the text a hook wrote. Made on first
  // use: a call whose hooks only judge never pays for it.
  const nlohmann::json& json() const;

  // Applies one hook's RFC 6902 patch array, atomically. On a refusal the
  // plan is unchanged and the status (INVALID_ARGUMENT) names the hook, the
  // operation and the path: `hook "stamp": patch 2 (replace /id): /id is
  // driver-owned`. Operations are numbered from 0.
  grpc::Status apply(const std::string& hook, const nlohmann::json& patches, bool may_override,
                     const PatchRules& rules);
  // The same for an in-process hook's prepared set (plan/patch_session.h),
  // with the same outcome as apply(prepared_to_json(ops)), made without
  // JSON where the message can be patched directly.
  grpc::Status apply_prepared(const std::string& hook, PreparedPatches& ops, bool may_override,
                              const PatchRules& rules);
  // The same checks without applying: what the patches would change (audit
  // mode logs this). The error is the message apply() would give.
  Result<std::vector<PlanChange>> preview(const std::string& hook, const nlohmann::json& patches, bool may_override,
                                          const PatchRules& rules) const;

  // Every path a hook set or removed -> that hook (validate hooks get this).
  const OwnerMap& owners() const { return owners_.by_path(); }
  // Every applied operation, in order (one audit log line each).
  const std::vector<PlanChange>& changes() const { return changes_; }
  // Patch sets applied to the message directly, not through the JSON form.
  size_t applied_on_message() const { return applied_on_message_; }

  // Writes what the plan changed onto `target` (the request's own sandbox)
  // and nothing else: unknown fields, secret values, hidden environment
  // entries and unchanged fields survive.
  grpc::Status write_back(openshell::compute::v1::DriverSandbox& target) const;

 private:
  struct Staged {
    PathOwners owners;
    std::vector<PlanChange> changes;
    std::shared_ptr<openshell::compute::v1::DriverSandbox> sandbox;  // from new_view()
    bool on_message = false;
  };
  // An empty message for a set's copy of the view: on arena_ (made on first
  // use) while the copies on it stay small, else on the heap.
  std::shared_ptr<openshell::compute::v1::DriverSandbox> new_view() const;
  // Add, remove and replace are applied to a copy of the view itself
  // (plan/message_target.h); other patch sets, and those it is unsure of,
  // to the plan's JSON form: taken when `take_json` (apply: a refusal drops
  // it, to be made again from the view), else a copy (preview).
  Result<Staged> stage(const std::string& hook, const nlohmann::json& patches, bool may_override,
                       const PatchRules& rules, bool take_json) const;
  template <class Patches>
  Result<Staged> stage_on_message(const std::string& hook, Patches& patches, bool may_override,
                                  const Protection& protection, bool keep_values) const;
  // rules.protection, or one made into `made`.
  Result<const Protection*> protection_for(const std::string& hook, const PatchRules& rules,
                                           std::optional<Protection>& made) const;
  void commit(Staged staged);
  Result<Staged> stage_on_json(const std::string& hook, const nlohmann::json& patches, bool may_override,
                               const Protection& protection, bool keep_values, Result<nlohmann::json> doc) const;
  Result<nlohmann::json> copy_document() const;
  bool current_prints_back() const;
  // Takes the cached form (json_ is a cache; apply() alone takes it).
  Result<nlohmann::json> take_document() const;
  std::string find_type_error(const nlohmann::json& patches, const std::string& whole) const;
  // The JSON form of current_, made once; an error if it has none.
  Result<const nlohmann::json*> document() const;

  // Where the views are made: the first (Plan::from) and each patch set's
  // copy, left there when the set is refused or a later one replaces it.
  // They, and what a set writes into them, are freed with the plan and the
  // requests it lent its views to, not piece by piece. Once the copies
  // would add up past kArenaBytes they go to the heap instead, so a large
  // view patched by many hooks is not kept once per set (new_view()).
  static constexpr size_t kArenaBytes = 256 * 1024;
  mutable bool copied_on_arena_ = false;
  mutable size_t arena_copied_bytes_ = 0;  // the copies' wire sizes, added up
  mutable std::shared_ptr<google::protobuf::Arena> arena_;
  // Immutable once made; the same object until a hook changes the plan.
  std::shared_ptr<const openshell::compute::v1::DriverSandbox> base_;     // the view before any hook
  std::shared_ptr<const openshell::compute::v1::DriverSandbox> current_;  // the view now
  mutable std::optional<nlohmann::json> json_;
  PathOwners owners_;
  std::vector<PlanChange> changes_;
  size_t applied_on_message_ = 0;
  // MessageTarget::prints_back(*current_), once known.
  mutable std::optional<bool> current_prints_back_;
};

// A view of `sandbox` fit for hooks: secret fields, unknown fields and
// OPENSHELL_SANDBOX_TOKEN* environment entries removed.
openshell::compute::v1::DriverSandbox hook_view(const openshell::compute::v1::DriverSandbox& sandbox);

}  // namespace owrap
