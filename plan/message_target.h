// The plan's DriverSandbox as a patch target: add, remove and replace done
// by reflection on the message, with no JSON form made, patched and read
// back. It answers only where it is sure to answer as the JSON form would:
// every value it writes must print back with the shape the hook wrote
// (members, array lengths), so every later question about the document
// (does this member exist, how long is that array) gets the same answer.
// Anything else (move, copy, test, the whole document, a value protobuf
// would print otherwise, a missing path whose error text the JSON form
// words, a map it has no accessor for) throws Unsure, and the plan runs the
// patch set on the JSON form from the start (plan/plan.cc). So the two never
// differ in outcome, only in time; tests/plan/message_target_test.cc holds
// them to that.
#pragma once

#include "plan/patch_session.h"
#include "plan/string_maps.h"

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>

namespace owrap {

class MessageTarget : public PatchTarget {
 public:
  struct Unsure {};

  // Where a path lands, in the JSON form's terms: an object (a message, a
  // string map or a Struct), an array (a repeated field or a ListValue), or
  // anything else (a scalar, null).
  struct Node {
    enum class Kind { kMessage, kRepeated, kStrings, kStruct, kList, kScalar };
    Kind kind = Kind::kScalar;
    google::protobuf::Message* message = nullptr;              // kMessage; kRepeated: the field's owner
    const google::protobuf::FieldDescriptor* field = nullptr;  // kRepeated
    StringMap* strings = nullptr;
    google::protobuf::Struct* fields = nullptr;
    google::protobuf::ListValue* list = nullptr;
  };

  // `root` is the plan's view being patched: no unknown fields, proto3.
  explicit MessageTarget(google::protobuf::Message& root) : root_(root) {}

  // Only add, remove and replace below the whole document.
  static bool handles(const nlohmann::json& patches);
  static bool handles(const PreparedPatches& ops);
  // `view` is what its JSON form reads back as: no Value without a kind,
  // no null_value but NULL_VALUE, no number that prints otherwise (-0,
  // NaN, infinities), nothing nested deeper than the printers go. The JSON
  // form is made afresh from the view for every patch set, so a view that
  // does not survive it (a request may carry one, a hook may write one)
  // must go that way too: the plan checks before and after the message.
  static bool prints_back(const google::protobuf::Message& view);
  // prints_back(root) after this target's operations, for a root that
  // printed back before them: only what they wrote can have changed that,
  // so the whole view is walked again only when a written value is not
  // plainly printable (a float, deep nesting, a message of another type).
  bool still_prints_back() const { return !recheck_ || prints_back(root_); }

  std::optional<nlohmann::json> value_at(const PathTokens& path) const override;
  bool has_member(const PathTokens& path) const override;
  std::optional<size_t> array_size(const PathTokens& path, size_t count) const override;
  std::string run(const PatchOp& op) override;

 private:
  // Where the first `count` tokens of `path` land; nullopt when nowhere.
  // The nodes of the last walk are kept and a walk starts below the longest
  // prefix it shares with it: an operation's checks, its run and its record
  // all ask for its parent, and the next operation mostly for the same or a
  // near one. An operation changes what is in its parent, never the parent,
  // so after it runs only the nodes down to its parent are kept.
  std::optional<Node> resolve(const PathTokens& path, size_t count) const;
  void run_on_message(google::protobuf::Message& m, const PatchOp& op, int depth);
  void run_on_repeated(google::protobuf::Message& owner, const google::protobuf::FieldDescriptor& f, const PatchOp& op,
                       int depth);
  void run_on_strings(StringMap& map, const PatchOp& op);
  void run_on_struct(google::protobuf::Struct& s, const PatchOp& op, int depth);
  void run_on_list(google::protobuf::ListValue& list, const PatchOp& op, int depth);
  // Notes whether what `op` writes into `parent` needs the whole walk.
  void note_written(const Node& parent, const PatchOp& op);

  google::protobuf::Message& root_;
  mutable PathTokens walked_;               // tokens of the kept walk
  mutable std::vector<Node> walked_nodes_;  // walked_nodes_[i]: where walked_[0..i] lands
  bool recheck_ = false;                    // still_prints_back() must walk the view
};

}  // namespace owrap
