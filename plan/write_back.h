// Writes a plan's changes onto the original message: only what differs
// between the plan's starting view and its final state, so whatever the view
// never had (secret values, unknown fields, hidden environment entries)
// survives untouched.
#pragma once

#include "plan/paths.h"

#include <google/protobuf/message.h>

#include <boost/container/small_vector.hpp>

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
// Anything outside the tree is what the plan started with. The tree is made
// per write-back, so its nodes sit in one buffer (no allocation for a
// handful of paths) and name the added paths' own tokens rather than copies:
// every path given to add() must outlive the tree.
class ChangedPaths {
 public:
  using Node = int;  // the root is 0
  static constexpr Node kNone = -1;

  void add(const PathTokens& path);

  bool whole(Node n) const { return nodes_[n].whole; }
  // Children in token order, as a std::map would list them.
  Node first_child(Node n) const { return nodes_[n].first_child; }
  Node next_sibling(Node n) const { return nodes_[n].next_sibling; }
  const std::string& token(Node n) const { return *nodes_[n].token; }

 private:
  struct Entry {
    const std::string* token = nullptr;
    bool whole = false;
    Node first_child = kNone;
    Node next_sibling = kNone;
  };
  Node child(Node parent, const std::string& token);

  boost::container::small_vector<Entry, 16> nodes_{Entry{}};
};

// write_changes() for only the parts in `changed`: a plan's write-back costs
// what its patches touched, not the size of the sandbox; `after` is copied
// only where a changed part is. `before` and
// `after` are the plan's views (JSON paths use proto field names; a
// google.protobuf.Struct's keys follow its field directly).
void write_changes_at(const google::protobuf::Message& before, const google::protobuf::Message& after,
                      google::protobuf::Message& target, const ChangedPaths& changed);

}  // namespace owrap
