// Which hook set which part of the plan (after containerd NRI's owners.go):
// the first hook to set a leaf path owns it, and a hook that removes a path
// owns the removal. Another hook that later changes or removes an owned path,
// something inside it or something containing it conflicts, unless it may
// override. Inserting into an array (`/-` or an index) never conflicts, so
// hooks can append to the same list; removing or replacing an element does.
#pragma once

#include "plan/paths.h"

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>

namespace owrap {

struct OwnerConflict {
  std::string path;  // the owned path the write would change
  std::string hook;  // its owner
};

class PathOwners {
 public:
  // The first path owned by a hook other than `hook` at, beneath or above
  // `path`; nullopt when the write is free.
  std::optional<OwnerConflict> conflict(const PathTokens& path, const std::string& hook) const;

  // `hook` wrote `value` at `path`: it now owns each leaf of the value (an
  // object is descended; a scalar, an array or an empty object is a leaf).
  void claim_set(const PathTokens& path, const nlohmann::json& value, const std::string& hook);
  // `hook` removed `path` from an object: it owns the removal.
  void claim_removal(const PathTokens& path, const std::string& hook);
  // An element was inserted at (delta 1) or removed from (delta -1) index
  // `index` of the array at `array`: owned paths of the elements after it
  // move with them; those of a removed element are dropped.
  void shift(const PathTokens& array, size_t index, int delta);

  // Leaf pointer -> hook.
  const std::map<std::string, std::string>& by_path() const { return owners_; }

 private:
  void erase_at_and_below(const std::string& pointer);
  void claim_leaves(std::string& pointer, const nlohmann::json& value, const std::string& hook);
  std::map<std::string, std::string> owners_;
};

}  // namespace owrap
