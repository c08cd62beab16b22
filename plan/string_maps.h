// The plan's string-to-string maps (labels, environment), reached through
// their generated accessors. Reflection reaches a map only through its
// repeated form, which makes an entry message per key; the plan's hot paths
// (patching, write-back) take these instead and leave other maps to
// reflection.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/map.h>
#include <google/protobuf/message.h>

#include <string>

namespace owrap {

using StringMap = google::protobuf::Map<std::string, std::string>;

// Map field `f` of `m`, when it is one of the plan's string maps; else null.
StringMap* mutable_string_map(google::protobuf::Message& m, const google::protobuf::FieldDescriptor& f);
const StringMap* string_map(const google::protobuf::Message& m, const google::protobuf::FieldDescriptor& f);

}  // namespace owrap
