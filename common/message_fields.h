// The message-typed members of a message type, for walks that descend only
// into messages. Reflection's ListFields lists every set field of every
// message and reaches map fields through their repeated form (a copy of
// every entry); these walks visit just the members that can hold what they
// look for.
#pragma once

#include <google/protobuf/descriptor.h>

#include <vector>

namespace owrap {

struct MessageFields {
  std::vector<const google::protobuf::FieldDescriptor*> singular;  // message-typed
  std::vector<const google::protobuf::FieldDescriptor*> repeated;  // message-typed, not maps
  bool message_valued_map = false;  // a map whose values are messages (not listed: the walk cannot reach it)
  bool extensions = false;          // extension ranges (not listed either)
};

// Made once per type and thread.
const MessageFields& message_fields(const google::protobuf::Descriptor& type);

}  // namespace owrap
