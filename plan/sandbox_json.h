// The plan's JSON form: the protobuf JSON mapping with proto field names and
// no default values, the shape hooks read and patch.
//
// The conversions walk messages and JSON by reflection (plan/proto_json.h)
// and hand what the walks are not sure about to protobuf's util, so they
// produce and accept exactly what protobuf 3.21's JSON utilities do (the
// `protobuf_json` functions below), at a fraction of their cost: those go
// through the binary form, a TypeResolver and JSON text.
#pragma once

#include "common/result.h"

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>
#include <nlohmann/json.hpp>

namespace owrap {

Result<nlohmann::json> message_to_json(const google::protobuf::Message& message);

// Parses `doc` into `out` (cleared first). Only proto field names are
// accepted: the JSON parser also takes lowerCamel names (`sandboxToken`),
// which would slip past every check that names fields the proto way.
Result<bool> json_to_message(const nlohmann::json& doc, google::protobuf::Message& out);

// A patch operation's value as JSON (a Value with no kind set, which
// protobuf renders as nothing, gives a discarded json).
nlohmann::json value_to_json(const google::protobuf::Value& value);

// The same conversions through protobuf's util only: the reference the fast
// ones are held to, and what they fall back on.
namespace protobuf_json {
Result<nlohmann::json> message_to_json(const google::protobuf::Message& message);
Result<bool> json_to_message(const nlohmann::json& doc, google::protobuf::Message& out);
nlohmann::json value_to_json(const google::protobuf::Value& value);
}  // namespace protobuf_json

}  // namespace owrap
