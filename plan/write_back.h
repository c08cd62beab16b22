// Writes a plan's changes onto the original message: only what differs
// between the plan's starting view and its final state, so whatever the view
// never had (secret values, unknown fields, hidden environment entries)
// survives untouched.
#pragma once

#include <google/protobuf/message.h>

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

}  // namespace owrap
