// Writes a plan's changes onto the original message: only what differs
// between the plan's starting view and its final state, so whatever the view
// never had (secret values, unknown fields, hidden environment entries)
// survives untouched.
#pragma once

#include "plan/paths.h"

#include <google/protobuf/message.h>

#include <map>
#include <string>

namespace owrap {

// `m` serialized deterministically (map entries in key order): equal bytes
// mean equal messages for messages without unknown fields (NaN payloads and
// -0.0 told apart, which MessageDifferencer would blur).
std::string canonical_bytes(const google::protobuf::Message& m);

// `before`, `after` and `target` have one type. Message fields are descended;
// map fields (a google.protobuf.Struct's too) are written per key; repeated
// fields and scalars are copied whole; a field `after` lacks is cleared. The
// changed values are moved out of `after`.
void write_changes(const google::protobuf::Message& before, google::protobuf::Message& after,
                   google::protobuf::Message& target);

// The parts of a plan that patches wrote, as a tree of JSON pointer tokens:
// a node is `whole` when a patch wrote it (or removed it) as a unit.
// Anything outside the tree is what the plan started with.
struct ChangedPaths {
  bool whole = false;
  std::map<std::string, ChangedPaths> children;
  void add(const PathTokens& path);
};

// write_changes() for only the parts in `changed`: a plan's write-back costs
// what its patches touched, not the size of the sandbox; `after` is copied
// only where a changed part is. `before` and
// `after` are the plan's views (JSON paths use proto field names; a
// google.protobuf.Struct's keys follow its field directly).
void write_changes_at(const google::protobuf::Message& before, const google::protobuf::Message& after,
                      google::protobuf::Message& target, const ChangedPaths& changed);

}  // namespace owrap
