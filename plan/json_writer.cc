// message -> nlohmann::json as protobuf 3.21's MessageToJsonString (with
// preserve_proto_field_names) followed by nlohmann::json::parse would give,
// including the JSON number types nlohmann's parser picks for the text
// protobuf writes.
#include "plan/proto_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/stubs/strutil.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace owrap::proto_json {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::Value;
using nlohmann::json;

namespace {

// nlohmann's parser reads "5" as unsigned and "-5" as signed.
json integer(int64_t v) {
  return v < 0 ? json(v) : json(static_cast<uint64_t>(v));
}

// The number nlohmann's parser makes of a numeral protobuf wrote: an integer
// when it has neither fraction nor exponent ("-0" included), else a double.
json numeral(const std::string& text) {
  if (text.find_first_not_of("-0123456789") == std::string::npos) {
    if (text[0] == '-') return json(static_cast<int64_t>(std::strtoll(text.c_str(), nullptr, 10)));
    return json(static_cast<uint64_t>(std::strtoull(text.c_str(), nullptr, 10)));
  }
  return json(std::strtod(text.c_str(), nullptr));
}

// protobuf writes non-finite numbers as strings.
template <class F>
json floating(F v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if constexpr (std::is_same_v<F, float>) return numeral(google::protobuf::SimpleFtoa(v));
  return numeral(google::protobuf::SimpleDtoa(v));
}

bool is_null_value_enum(const FieldDescriptor& f) {
  return f.enum_type()->full_name() == "google.protobuf.NullValue";
}

bool enum_json(const FieldDescriptor& f, int number, json& out) {
  if (is_null_value_enum(f)) {
    if (number != 0) return false;
    out = nullptr;
    return true;
  }
  // Aliases: which name protobuf picks is its business; unknown numbers it
  // writes as numbers.
  if (f.enum_type()->options().allow_alias()) return false;
  const auto* value = f.enum_type()->FindValueByNumber(number);
  if (!value) return false;
  out = value->name();
  return true;
}

class Writer {
 public:
  bool message(const Message& m, json& out, int depth);
  bool value(const Value& v, json& out, int depth);

 private:
  bool well_known(const Message& m, json& out, int depth);
  bool field(const Message& m, const Reflection& r, const FieldDescriptor& f, json& out, int depth);
  bool map(const Message& m, const Reflection& r, const FieldDescriptor& f, json& out, int depth);
  bool element(const Message& m, const Reflection& r, const FieldDescriptor& f, int index, json& out, int depth);
  bool text(const Message& m, const Reflection& r, const FieldDescriptor& f, int index, json& out);
  bool fields(const google::protobuf::Struct& s, json& out, int depth);
  bool list(const google::protobuf::ListValue& l, json& out, int depth);
};

bool Writer::message(const Message& m, json& out, int depth) {
  if (depth > kMaxDepth) return false;
  const Descriptor& d = *m.GetDescriptor();
  if (d.well_known_type() != Descriptor::WELLKNOWNTYPE_UNSPECIFIED) return well_known(m, out, depth);
  if (d.file()->syntax() != FileDescriptor::SYNTAX_PROTO3) return false;
  const Reflection& r = *m.GetReflection();
  // Set fields only: proto3 scalars that differ from their default, present
  // messages and `optional`s, non-empty repeated fields: what the binary form
  // protobuf renders from holds.
  std::vector<const FieldDescriptor*> set;
  r.ListFields(m, &set);
  out = json::object();
  for (const FieldDescriptor* f : set) {
    if (f->is_extension()) return false;
    if (!field(m, r, *f, out[f->name()], depth)) return false;
  }
  return true;
}

bool Writer::well_known(const Message& m, json& out, int depth) {
  switch (m.GetDescriptor()->well_known_type()) {
    case Descriptor::WELLKNOWNTYPE_STRUCT:
      if (const auto* s = dynamic_cast<const google::protobuf::Struct*>(&m)) return fields(*s, out, depth);
      return false;
    case Descriptor::WELLKNOWNTYPE_VALUE:
      if (const auto* v = dynamic_cast<const Value*>(&m)) return value(*v, out, depth);
      return false;
    case Descriptor::WELLKNOWNTYPE_LISTVALUE:
      if (const auto* l = dynamic_cast<const google::protobuf::ListValue*>(&m)) return list(*l, out, depth);
      return false;
    default:  // Any, Timestamp, Duration, FieldMask, wrappers, Empty
      return false;
  }
}

bool Writer::field(const Message& m, const Reflection& r, const FieldDescriptor& f, json& out, int depth) {
  if (f.is_map()) return map(m, r, f, out, depth);
  if (!f.is_repeated()) return element(m, r, f, -1, out, depth);
  int n = r.FieldSize(m, &f);
  out = json::array();
  auto& items = out.get_ref<json::array_t&>();
  items.resize(n);
  for (int i = 0; i < n; i++) {
    if (!element(m, r, f, i, items[i], depth)) return false;
  }
  return true;
}

// Map entries through the repeated view; a key seen twice (a map built
// through reflection) keeps its last value, as the map itself does.
bool Writer::map(const Message& m, const Reflection& r, const FieldDescriptor& f, json& out, int depth) {
  const FieldDescriptor& key = *f.message_type()->map_key();
  const FieldDescriptor& val = *f.message_type()->map_value();
  out = json::object();
  int n = r.FieldSize(m, &f);
  for (int i = 0; i < n; i++) {
    const Message& entry = r.GetRepeatedMessage(m, &f, i);
    const Reflection& er = *entry.GetReflection();
    json k;
    if (key.cpp_type() == FieldDescriptor::CPPTYPE_BOOL) {
      k = er.GetBool(entry, &key) ? "true" : "false";
    } else if (!element(entry, er, key, -1, k, depth + 1)) {
      return false;
    } else if (!k.is_string()) {
      k = k.dump();  // 32-bit keys: protobuf quotes them
    }
    // A map entry always carries its value on the wire, default or not.
    if (!element(entry, er, val, -1, out[k.get_ref<const std::string&>()], depth + 1)) return false;
  }
  return true;
}

// One value of `f`: the singular one (index -1) or a repeated element.
bool Writer::element(const Message& m, const Reflection& r, const FieldDescriptor& f, int index, json& out, int depth) {
  const bool rep = index >= 0;
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      out = integer(rep ? r.GetRepeatedInt32(m, &f, index) : r.GetInt32(m, &f));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      out = static_cast<uint64_t>(rep ? r.GetRepeatedUInt32(m, &f, index) : r.GetUInt32(m, &f));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      out = std::to_string(rep ? r.GetRepeatedInt64(m, &f, index) : r.GetInt64(m, &f));
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      out = std::to_string(rep ? r.GetRepeatedUInt64(m, &f, index) : r.GetUInt64(m, &f));
      return true;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      out = floating(rep ? r.GetRepeatedDouble(m, &f, index) : r.GetDouble(m, &f));
      return true;
    case FieldDescriptor::CPPTYPE_FLOAT:
      out = floating(rep ? r.GetRepeatedFloat(m, &f, index) : r.GetFloat(m, &f));
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      out = rep ? r.GetRepeatedBool(m, &f, index) : r.GetBool(m, &f);
      return true;
    case FieldDescriptor::CPPTYPE_ENUM:
      return enum_json(f, rep ? r.GetRepeatedEnumValue(m, &f, index) : r.GetEnumValue(m, &f), out);
    case FieldDescriptor::CPPTYPE_STRING:
      return text(m, r, f, index, out);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return message(rep ? r.GetRepeatedMessage(m, &f, index) : r.GetMessage(m, &f), out, depth + 1);
  }
  return false;
}

bool Writer::text(const Message& m, const Reflection& r, const FieldDescriptor& f, int index, json& out) {
  std::string scratch;
  const std::string& s =
      index >= 0 ? r.GetRepeatedStringReference(m, &f, index, &scratch) : r.GetStringReference(m, &f, &scratch);
  if (f.type() == FieldDescriptor::TYPE_BYTES) {
    std::string base64;
    google::protobuf::Base64Escape(s, &base64);
    out = std::move(base64);
    return true;
  }
  // protobuf blanks a string that is not UTF-8; nlohmann refuses some of
  // what it writes instead.
  if (!is_utf8(s)) return false;
  out = s;
  return true;
}

bool Writer::value(const Value& v, json& out, int depth) {
  if (depth > kMaxDepth) return false;
  switch (v.kind_case()) {
    case Value::kNullValue:
      if (v.null_value() != google::protobuf::NULL_VALUE) return false;
      out = nullptr;
      return true;
    case Value::kNumberValue:
      out = floating(v.number_value());
      return true;
    case Value::kStringValue:
      if (!is_utf8(v.string_value())) return false;
      out = v.string_value();
      return true;
    case Value::kBoolValue:
      out = v.bool_value();
      return true;
    case Value::kStructValue:
      return fields(v.struct_value(), out, depth + 1);
    case Value::kListValue:
      return list(v.list_value(), out, depth + 1);
    case Value::KIND_NOT_SET:  // protobuf leaves it out of a Struct or list, and writes nothing for a lone one
      return false;
  }
  return false;
}

bool Writer::fields(const google::protobuf::Struct& s, json& out, int depth) {
  if (depth > kMaxDepth) return false;
  out = json::object();
  for (const auto& [key, v] : s.fields()) {
    if (!is_utf8(key)) return false;
    if (!value(v, out[key], depth + 1)) return false;
  }
  return true;
}

bool Writer::list(const google::protobuf::ListValue& l, json& out, int depth) {
  if (depth > kMaxDepth) return false;
  out = json::array();
  auto& items = out.get_ref<json::array_t&>();
  items.resize(l.values_size());
  for (int i = 0; i < l.values_size(); i++) {
    if (!value(l.values(i), items[i], depth + 1)) return false;
  }
  return true;
}

}  // namespace

bool write_message(const Message& message, json& out) {
  return Writer().message(message, out, 0);
}

bool write_value(const Value& value, json& out) {
  return Writer().value(value, out, 0);
}

bool is_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      p++;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < len) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (size_t i = 2; i < len; i++) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += len;
  }
  return true;
}

}  // namespace owrap::proto_json
