#include "plan/sandbox_json.h"

#include "plan/paths.h"
#include "plan/proto_json.h"

#include <google/protobuf/util/json_util.h>

namespace owrap {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

namespace {

std::string first_foreign_name(const json& doc, const Descriptor& type, PathTokens& at);

// `value` is one value of `field` (an element, for a repeated or map field).
std::string check_value(const json& value, const FieldDescriptor& field, PathTokens& at) {
  const Descriptor* type = field.message_type();
  if (!type || !value.is_object()) return "";
  return first_foreign_name(value, *type, at);
}

std::string check_field(const json& value, const FieldDescriptor& field, PathTokens& at) {
  if (field.is_map() && value.is_object()) {
    for (const auto& [key, item] : value.items()) {
      at.push_back(key);
      if (auto bad = check_value(item, *field.message_type()->map_value(), at); !bad.empty()) return bad;
      at.pop_back();
    }
    return "";
  }
  if (field.is_repeated() && value.is_array()) {
    for (size_t i = 0; i < value.size(); i++) {
      at.push_back(std::to_string(i));
      if (auto bad = check_value(value[i], field, at); !bad.empty()) return bad;
      at.pop_back();
    }
    return "";
  }
  return check_value(value, field, at);
}

// The pointer of the first key that is not a proto field name, or "".
std::string first_foreign_name(const json& doc, const Descriptor& type, PathTokens& at) {
  if (type.well_known_type() != Descriptor::WELLKNOWNTYPE_UNSPECIFIED) return "";
  for (const auto& [key, value] : doc.items()) {
    at.push_back(key);
    const FieldDescriptor* field = type.FindFieldByName(key);
    if (!field) return to_pointer(at);
    if (auto bad = check_field(value, *field, at); !bad.empty()) return bad;
    at.pop_back();
  }
  return "";
}

}  // namespace

namespace protobuf_json {

Result<json> message_to_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string text;
  auto status = google::protobuf::util::MessageToJsonString(message, &text, options);
  if (!status.ok()) return Error{std::string(status.message())};
  return json::parse(text, nullptr, false);
}

Result<bool> json_to_message(const json& doc, google::protobuf::Message& out) {
  out.Clear();
  if (!doc.is_object()) return Error{"the sandbox must be a JSON object"};
  PathTokens at;
  if (auto bad = first_foreign_name(doc, *out.GetDescriptor(), at); !bad.empty()) {
    return Error{bad + ": no such field (fields go by their proto names)"};
  }
  std::string text;
  try {
    text = doc.dump();
  } catch (const json::type_error&) {  // nlohmann refuses to write what is not UTF-8
    return Error{"a string is not valid UTF-8"};
  }
  auto status = google::protobuf::util::JsonStringToMessage(text, &out);
  if (!status.ok()) return Error{std::string(status.message())};
  return true;
}

json value_to_json(const google::protobuf::Value& value) {
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(value, &text);
  return json::parse(text, nullptr, false);
}

}  // namespace protobuf_json

Result<json> message_to_json(const google::protobuf::Message& message) {
  json out;
  if (proto_json::write_message(message, out)) return out;
  return protobuf_json::message_to_json(message);
}

Result<bool> json_to_message(const json& doc, google::protobuf::Message& out) {
  out.Clear();
  // Whatever the walk leaves, protobuf judges: its errors are the ones
  // callers (and hook authors) see.
  if (doc.is_object() && proto_json::read_message(doc, out)) return true;
  return protobuf_json::json_to_message(doc, out);
}

json value_to_json(const google::protobuf::Value& value) {
  json out;
  if (proto_json::write_value(value, out)) return out;
  return protobuf_json::value_to_json(value);
}

}  // namespace owrap
