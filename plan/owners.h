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
#include <string_view>

namespace owrap {

struct OwnerConflict {
  std::string path;  // the owned path the write would change
  std::string hook;  // its owner
};

// Leaf pointer -> hook; looked up by string_view too.
using OwnerMap = std::map<std::string, std::string, std::less<>>;

class PathOwners {
 public:
  // The first path owned by a hook other than `hook` at, beneath or above
  // `pointer` (a JSON pointer as to_pointer() writes it); nullopt when the
  // write is free.
  std::optional<OwnerConflict> conflict(std::string_view pointer, const std::string& hook) const;

  // `hook` wrote `value` at `pointer` (as above): it now owns each leaf of
  // the value (an object is descended; a scalar, an array or an empty
  // object is a leaf).
  void claim_set(std::string pointer, const nlohmann::json& value, const std::string& hook);
  // `hook` removed `path` from an object: it owns the removal.
  void claim_removal(const PathTokens& path, const std::string& hook);
  // An element was inserted at (delta 1) or removed from (delta -1) index
  // `index` of the array at `array`: owned paths of the elements after it
  // move with them; those of a removed element are dropped.
  void shift(const PathTokens& array, size_t index, int delta);

  const OwnerMap& by_path() const { return owners_; }

 private:
  void erase_at_and_below(const std::string& pointer);
  // The first owned path beneath `pointer`, or past them all.
  OwnerMap::const_iterator first_below(std::string_view pointer) const;
  void claim_leaves(std::string& pointer, const nlohmann::json& value, const std::string& hook);
  OwnerMap owners_;
};

}  // namespace owrap
