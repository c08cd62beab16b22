// The plan's JSON form: the protobuf JSON mapping with proto field names and
// no default values, the shape hooks read and patch.
#pragma once

#include "common/result.h"

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

namespace owrap {

Result<nlohmann::json> message_to_json(const google::protobuf::Message& message);

// Parses `doc` into `out` (cleared first). Only proto field names are
// accepted: the JSON parser also takes lowerCamel names (`sandboxToken`),
// which would slip past every check that names fields the proto way.
Result<bool> json_to_message(const nlohmann::json& doc, google::protobuf::Message& out);

}  // namespace owrap
