// One hook's patch set, applied operation by operation to a working copy of
// the plan with every safety rule checked first. Plan uses it and keeps the
// result only when every operation passed.
#pragma once

#include "plan/owners.h"
#include "plan/paths.h"
#include "plan/protection.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace owrap {

// One applied operation: an audit log line.
struct PlanChange {
  std::string hook;
  std::string op;          // add, remove, replace, move, copy
  std::string path;        // JSON pointer
  std::string from;        // move and copy
  nlohmann::json value;    // what was written (null for remove)
  PathTokens path_tokens;  // `path` and `from` parsed (write-back places changes by them)
  PathTokens from_tokens;
};

class PatchSession {
 public:
  PatchSession(const Protection& protection, std::string hook, bool may_override, nlohmann::json doc, PathOwners owners)
      : protection_(protection),
        hook_(std::move(hook)),
        may_override_(may_override),
        doc_(std::move(doc)),
        owners_(std::move(owners)) {}

  // Applies operation `index`; empty, or why it was refused as
  // `patch 2 (replace /id): /id is driver-owned` (the session is then spoilt).
  std::string apply(const nlohmann::json& op, size_t index);

  nlohmann::json& doc() { return doc_; }
  PathOwners& owners() { return owners_; }
  std::vector<PlanChange>& changes() { return changes_; }

 private:
  struct Op {
    const nlohmann::json* raw;
    std::string op;
    PathTokens path;
    PathTokens from;
    nlohmann::json source;                  // move, copy: the source's value, taken before the operation
    const nlohmann::json* value = nullptr;  // what lands at `path`: the operation's own "value", or `source`
  };
  Result<Op> parse(const nlohmann::json& raw) const;
  std::string step(Op& op);
  std::string guard(Op& op) const;
  std::string guard_add(const PathTokens& path, const nlohmann::json& value) const;
  std::string check_owners(const Op& op) const;
  std::string check_owner(const PathTokens& path) const;
  std::string run(const Op& op);
  bool run_directly(const Op& op);
  std::string refuse_scalar_parent(const Op& op) const;
  void record(Op& op);
  void record_removal(const PathTokens& path);
  void record_add(const PathTokens& path, const nlohmann::json& value);
  const nlohmann::json* parent_array(const PathTokens& path) const;

  const Protection& protection_;
  std::string hook_;
  bool may_override_;
  nlohmann::json doc_;
  PathOwners owners_;
  std::vector<PlanChange> changes_;
};

// "patch 2 (replace /id)", "patch 0 (move from /a to /b)": how refusals name an operation.
std::string patch_label(const nlohmann::json& op, size_t index);

// The value at `path`, or null when there is none (never throws).
const nlohmann::json* find_at(const nlohmann::json& doc, const PathTokens& path);

}  // namespace owrap
