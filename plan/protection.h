// What no hook may write: the contract's driver-owned fields, every field the
// schema marks secret (found by reflection on the field option, at any
// depth), and the operator's extra prefixes. A part is protected together
// with everything beneath it; a strict ancestor of a protected part cannot be
// replaced or removed whole, since that would replace or remove it too.
#pragma once

#include "common/result.h"
#include "plan/paths.h"

#include <google/protobuf/descriptor.h>

#include <memory>
#include <string>
#include <vector>

namespace owrap {

// The contract's "Driver-owned fields a hook must never change" as patterns
// over the DriverSandbox JSON view (proto field names), plus /status.
const std::vector<std::string>& driver_owned_patterns();

// Where a path lands in a message schema.
struct SchemaSpot {
  std::string secret;          // the secret field at or above the path, as a pointer; empty when none
  bool holds_secrets = false;  // what the path names can contain a secret field beneath it
};
// Walks `path` (proto field names; map keys and array indices in between)
// through the schema rooted at `root`. A token the schema does not know ends
// the walk with nothing found: the type check refuses such a path anyway.
SchemaSpot schema_spot(const google::protobuf::Descriptor& root, const PathTokens& path);

class Protection {
 public:
  // `extra` are the operator's patterns (PathPattern syntax).
  static Result<Protection> make(const google::protobuf::Descriptor& root, const std::vector<std::string>& extra);

  // Why `path` may not be written at all (it is protected or lies beneath a
  // protected part), naming it; empty when it may.
  std::string inside(const PathTokens& path) const;
  // Why `path` may not be replaced or removed whole (a protected part lies
  // beneath it); empty when it may.
  std::string contains(const PathTokens& path) const;
  // Both answers at once (one lookup): {inside, contains}.
  struct Verdicts {
    std::string inside;
    std::string contains;
  };
  Verdicts judge(const PathTokens& path) const;

 private:
  struct Rule {
    PathPattern pattern;
    bool operator_rule;
  };
  // Both answers depend on the path alone, and a chain's hooks write the
  // same few paths on every call: they are judged once (up to a bound) and
  // remembered. Shared by the calls of every queue thread.
  struct Memo;
  std::string judge_inside(const PathTokens& path) const;
  std::string judge_contains(const PathTokens& path) const;

  const google::protobuf::Descriptor* root_ = nullptr;
  std::vector<Rule> rules_;
  std::shared_ptr<Memo> memo_;
};

}  // namespace owrap
