// One hook's patch set, applied operation by operation to a working copy of
// the plan with every safety rule checked first. Plan uses it and keeps the
// result only when every operation passed.
#pragma once

#include "plan/owners.h"
#include "plan/paths.h"
#include "plan/protection.h"

#include <nlohmann/json.hpp>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace owrap {

// One applied operation: an audit log line.
struct PlanChange {
  std::string hook;
  std::string op;          // add, remove, replace, move, copy
  std::string path;        // JSON pointer
  std::string from;        // move and copy
  nlohmann::json value;    // what was written (null for remove, or when values are not kept)
  PathTokens path_tokens;  // `path` and `from` parsed (write-back places changes by them)
  PathTokens from_tokens;
};

// One operation of a patch set, parsed.
struct PatchOp {
  const nlohmann::json* raw = nullptr;  // as the hook wrote it; null for a prepared operation
  std::string op;
  PathTokens path;
  std::string path_text;  // `path` as the JSON pointer it was given as
  PathTokens from;
  nlohmann::json source;                  // move, copy: the source's value, taken before the operation
  const nlohmann::json* value = nullptr;  // what lands at `path`: the operation's own "value", or `source`
};

// A patch set an in-process hook built already parsed, so the plan neither
// prints nor parses it: add, remove and replace operations with `raw` null,
// each `value` pointing at what outlives the set (the hook's configuration)
// or, when null, at its own `source`. Its meaning is that of
// prepared_to_json(), which every path that reads JSON (the JSON form, audit
// previews, the size limit's exact count) is given instead.
using PreparedPatches = std::vector<PatchOp>;
// An add of `value` at `path` (tokens, unescaped); `value` must outlive the
// set, or be null to take `owned`.
PatchOp prepared_add(PathTokens path, const nlohmann::json* value, nlohmann::json owned = nullptr);
// The same with the path's pointer already written (to_pointer(path)).
PatchOp prepared_add(PathTokens path, std::string pointer, const nlohmann::json* value, nlohmann::json owned = nullptr);
// The same operations as an RFC 6902 array.
nlohmann::json prepared_to_json(const PreparedPatches& ops);
// What a prepared add or replace writes: `*op.value`, or `op.source` when null.
inline const nlohmann::json& prepared_value(const PatchOp& op) {
  return op.value ? *op.value : op.source;
}

// What a patch set runs on. Every answer is about the plan's JSON form
// (protobuf JSON, proto field names) as the operations so far left it.
class PatchTarget {
 public:
  virtual ~PatchTarget() = default;
  // The value at `path` (move and copy read their source); nullopt when none.
  virtual std::optional<nlohmann::json> value_at(const PathTokens& path) const = 0;
  // `path` names an existing member of an object.
  virtual bool has_member(const PathTokens& path) const = 0;
  // The size of the array the first `count` tokens of `path` name; nullopt
  // when there is no array there.
  virtual std::optional<size_t> array_size(const PathTokens& path, size_t count) const = 0;
  // Runs one operation the safety rules passed: empty, or why it failed.
  virtual std::string run(const PatchOp& op) = 0;
};

// The reference target: the plan's JSON form itself, changed as RFC 6902
// (nlohmann's patch) says.
class JsonTarget : public PatchTarget {
 public:
  explicit JsonTarget(nlohmann::json doc) : doc_(std::move(doc)) {}
  std::optional<nlohmann::json> value_at(const PathTokens& path) const override;
  bool has_member(const PathTokens& path) const override;
  std::optional<size_t> array_size(const PathTokens& path, size_t count) const override;
  std::string run(const PatchOp& op) override;
  nlohmann::json& doc() { return doc_; }

 private:
  bool run_directly(const PatchOp& op);
  std::string refuse_scalar_parent(const PatchOp& op) const;
  nlohmann::json doc_;
};

class PatchSession {
 public:
  PatchSession(const Protection& protection, std::string hook, bool may_override, PatchTarget& target,
               PathOwners owners, bool keep_values = true)
      : protection_(protection),
        hook_(std::move(hook)),
        may_override_(may_override),
        keep_values_(keep_values),
        target_(target),
        owners_(std::move(owners)) {}

  // Applies operation `index`; empty, or why it was refused as
  // `patch 2 (replace /id): /id is driver-owned` (the session is then spoilt).
  std::string apply(const nlohmann::json& op, size_t index);
  // Every operation of `patches` in order; the first refusal, or empty.
  std::string apply_all(const nlohmann::json& patches);
  // The same for a prepared set. The operations are spent, except when the
  // target throws (MessageTarget::Unsure): then they are given back whole,
  // for the set to run again as JSON.
  std::string apply_all(PreparedPatches& ops);
  // After apply_all(ops) applied every operation: gives them back what
  // record() took, for a set the plan must run again as JSON after all.
  void give_back(PreparedPatches& ops);
  void give_back(const nlohmann::json&) {}  // a JSON set is not spent

  PathOwners& owners() { return owners_; }
  std::vector<PlanChange>& changes() { return changes_; }

 private:
  Result<PatchOp> parse(const nlohmann::json& raw) const;
  std::string step(PatchOp& op);
  std::string guard(PatchOp& op) const;
  std::string guard_add(const PathTokens& path, const nlohmann::json& value) const;
  // `parent`: parent_array(op.path) before the operation, asked once.
  std::string check_owners(const PatchOp& op, std::optional<size_t> parent) const;
  std::string check_owner(const std::string& pointer) const;
  // Moves what it keeps out of `op`.
  void record(PatchOp& op, std::optional<size_t> parent);
  // `in_array`: the path's parent is an array (after the operation).
  void record_removal(const PathTokens& path, bool in_array);
  // `size`: that of the array the path's parent is, after the operation.
  void record_add(const PathTokens& path, const std::string& pointer, const nlohmann::json& value,
                  std::optional<size_t> size);
  std::optional<size_t> parent_array(const PathTokens& path) const;
  void give_back(PreparedPatches& ops, size_t first_change, size_t count);

  const Protection& protection_;
  std::string hook_;
  bool may_override_;
  bool keep_values_;
  PatchTarget& target_;
  PathOwners owners_;
  std::vector<PlanChange> changes_;
};

// `raw` is an operation object whose "op" is one of `ops` and whose "path"
// is a string naming something below the whole document.
bool is_patch_op(const nlohmann::json& raw, std::initializer_list<const char*> ops);

// "patch 2 (replace /id)", "patch 0 (move from /a to /b)": how refusals name an operation.
std::string patch_label(const nlohmann::json& op, size_t index);
std::string patch_label(const PatchOp& op, size_t index);

// The value at `path` (or at its first `count` tokens), or null when there
// is none (never throws).
const nlohmann::json* find_at(const nlohmann::json& doc, const PathTokens& path);
const nlohmann::json* find_at(const nlohmann::json& doc, const PathTokens& path, size_t count);

}  // namespace owrap
