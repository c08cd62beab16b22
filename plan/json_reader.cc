// nlohmann::json -> message, for documents protobuf 3.21's JsonStringToMessage
// (fed doc.dump()) would surely accept, giving the message it would give.
// Only the forms the plan writes, and the plain ones a hook writes, are read
// here; anything else returns false and goes to protobuf.
#include "plan/proto_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/strutil.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <string>

namespace owrap::proto_json {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::Value;
using nlohmann::json;

namespace {

// A decimal integer written the one way: no sign but a leading '-', no
// leading zero, no blanks.
template <class T>
std::optional<T> canonical_integer(const std::string& s) {
  size_t digits = !s.empty() && s[0] == '-' ? 1 : 0;
  if (s.size() == digits || (s[digits] == '0' && s.size() > digits + 1) || (digits && s[digits] == '0')) {
    return std::nullopt;
  }
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// A JSON integer in T's range; 64-bit fields also take their string form.
template <class T>
std::optional<T> integer(const json& v) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return std::nullopt;
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {
    auto i = v.get<int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      if (i < 0 || static_cast<uint64_t>(i) > std::numeric_limits<T>::max()) return std::nullopt;
    } else {
      if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) return std::nullopt;
    }
    return static_cast<T>(i);
  }
  if (sizeof(T) == 8 && v.is_string()) return canonical_integer<T>(v.get_ref<const std::string&>());
  return std::nullopt;
}

// A JSON integer F holds exactly: protobuf's conversion check passes it
// unchanged. Others it may round or refuse, which is its call.
template <class F>
std::optional<double> exact(const json& v) {
  constexpr F kTwo63 = 9223372036854775808.0;
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    F f = static_cast<F>(u);
    if (f >= 2 * kTwo63 || static_cast<uint64_t>(f) != u) return std::nullopt;
    return f;
  }
  auto i = v.get<int64_t>();
  F f = static_cast<F>(i);
  if (f >= kTwo63 || f < -kTwo63 || static_cast<int64_t>(f) != i) return std::nullopt;
  return f;
}

// A finite JSON number, or the strings protobuf writes for non-finite ones.
template <class F>
std::optional<double> floating(const json& v) {
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d)) return std::nullopt;  // nlohmann dumps it as null
    return d;
  }
  if (v.is_number_integer() || v.is_number_unsigned()) return exact<F>(v);
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  return std::nullopt;
}

std::optional<float> single(const json& v) {
  auto d = floating<float>(v);
  if (!d) return std::nullopt;
  if (std::isfinite(*d) && std::fabs(*d) > std::numeric_limits<float>::max()) return std::nullopt;
  return static_cast<float>(*d);
}

// The JSON name protobuf derives from a field's name; a field with another
// one (set by the json_name option) is left to protobuf.
bool plain_json_name(const FieldDescriptor& f) {
  const std::string& name = f.name();
  const std::string& json_name = f.json_name();
  size_t k = 0;
  bool upper = false;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    char want = upper && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
    upper = false;
    if (k >= json_name.size() || json_name[k++] != want) return false;
  }
  return k == json_name.size();
}

// Only the canonical padded base64 protobuf writes.
std::optional<std::string> base64(const std::string& s) {
  std::string bytes;
  if (!google::protobuf::Base64Unescape(s, &bytes)) return std::nullopt;
  std::string again;
  google::protobuf::Base64Escape(bytes, &again);
  if (again != s) return std::nullopt;
  return bytes;
}

class Reader {
 public:
  bool message(const json& doc, Message& m, int depth);
  bool field(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, int depth);
  bool element(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, bool add, int depth);
  bool value(const json& v, Value& out, int depth);

 private:
  bool map_entry(const std::string& key, const json& v, Message& m, const Reflection& r, const FieldDescriptor& f,
                 int depth);
  bool map_key(const std::string& key, Message& entry, const Reflection& r, const FieldDescriptor& f);
  bool number(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, bool add);
  bool text(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, bool add);
  bool well_known(const json& v, Message& m, int depth);
  bool fields(const json& v, google::protobuf::Struct& out, int depth);
  bool list(const json& v, google::protobuf::ListValue& out, int depth);
};

bool Reader::message(const json& doc, Message& m, int depth) {
  if (depth > kMaxDepth) return false;
  const Descriptor& d = *m.GetDescriptor();
  if (d.well_known_type() != Descriptor::WELLKNOWNTYPE_UNSPECIFIED) return well_known(doc, m, depth);
  if (!doc.is_object() || d.file()->syntax() != FileDescriptor::SYNTAX_PROTO3) return false;
  const Reflection& r = *m.GetReflection();
  for (const auto& [key, v] : doc.get_ref<const json::object_t&>()) {
    const FieldDescriptor* f = d.FindFieldByName(key);
    if (!f || !plain_json_name(*f)) return false;  // protobuf judges (and the name rule refuses) the rest
    if (!field(v, m, r, *f, depth)) return false;
  }
  return true;
}

bool Reader::field(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, int depth) {
  if (v.is_null()) return false;  // protobuf reads null as "unset" for most fields, not for all
  if (f.is_map()) {
    if (!v.is_object()) return false;
    for (const auto& [key, item] : v.get_ref<const json::object_t&>()) {
      if (!map_entry(key, item, m, r, f, depth)) return false;
    }
    return true;
  }
  if (f.is_repeated()) {
    if (!v.is_array()) return false;
    for (const auto& item : v.get_ref<const json::array_t&>()) {
      if (item.is_null() || !element(item, m, r, f, true, depth)) return false;
    }
    return true;
  }
  // A second member of one oneof: protobuf's answer is its own.
  if (const auto* oneof = f.real_containing_oneof(); oneof && r.HasOneof(m, oneof)) return false;
  return element(v, m, r, f, false, depth);
}

bool Reader::map_entry(const std::string& key, const json& v, Message& m, const Reflection& r, const FieldDescriptor& f,
                       int depth) {
  if (v.is_null()) return false;
  Message* entry = r.AddMessage(&m, &f);
  const Reflection& er = *entry->GetReflection();
  const Descriptor& type = *f.message_type();
  return map_key(key, *entry, er, *type.map_key()) && element(v, *entry, er, *type.map_value(), false, depth + 1);
}

bool Reader::map_key(const std::string& key, Message& entry, const Reflection& r, const FieldDescriptor& f) {
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (!is_utf8(key)) return false;
      r.SetString(&entry, &f, key);
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      if (key != "true" && key != "false") return false;
      r.SetBool(&entry, &f, key == "true");
      return true;
    case FieldDescriptor::CPPTYPE_INT32:
      if (auto k = canonical_integer<int32_t>(key)) return r.SetInt32(&entry, &f, *k), true;
      return false;
    case FieldDescriptor::CPPTYPE_INT64:
      if (auto k = canonical_integer<int64_t>(key)) return r.SetInt64(&entry, &f, *k), true;
      return false;
    case FieldDescriptor::CPPTYPE_UINT32:
      if (auto k = canonical_integer<uint32_t>(key)) return r.SetUInt32(&entry, &f, *k), true;
      return false;
    case FieldDescriptor::CPPTYPE_UINT64:
      if (auto k = canonical_integer<uint64_t>(key)) return r.SetUInt64(&entry, &f, *k), true;
      return false;
    default:
      return false;
  }
}

// One value of `f`: set (singular) or appended (`add`, repeated).
bool Reader::element(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, bool add, int depth) {
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      if (!v.is_boolean()) return false;
      add ? r.AddBool(&m, &f, v.get<bool>()) : r.SetBool(&m, &f, v.get<bool>());
      return true;
    case FieldDescriptor::CPPTYPE_ENUM: {
      // Names only; numbers, and NullValue's null, go to protobuf.
      if (!v.is_string() || f.enum_type()->full_name() == "google.protobuf.NullValue") return false;
      const auto* e = f.enum_type()->FindValueByName(v.get_ref<const std::string&>());
      if (!e) return false;
      add ? r.AddEnumValue(&m, &f, e->number()) : r.SetEnumValue(&m, &f, e->number());
      return true;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      return text(v, m, r, f, add);
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      Message* sub = add ? r.AddMessage(&m, &f) : r.MutableMessage(&m, &f);
      return message(v, *sub, depth + 1);
    }
    default:
      return number(v, m, r, f, add);
  }
}

bool Reader::number(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, bool add) {
  switch (f.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      if (auto n = integer<int32_t>(v)) return (add ? r.AddInt32(&m, &f, *n) : r.SetInt32(&m, &f, *n)), true;
      return false;
    case FieldDescriptor::CPPTYPE_INT64:
      if (auto n = integer<int64_t>(v)) return (add ? r.AddInt64(&m, &f, *n) : r.SetInt64(&m, &f, *n)), true;
      return false;
    case FieldDescriptor::CPPTYPE_UINT32:
      if (auto n = integer<uint32_t>(v)) return (add ? r.AddUInt32(&m, &f, *n) : r.SetUInt32(&m, &f, *n)), true;
      return false;
    case FieldDescriptor::CPPTYPE_UINT64:
      if (auto n = integer<uint64_t>(v)) return (add ? r.AddUInt64(&m, &f, *n) : r.SetUInt64(&m, &f, *n)), true;
      return false;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      if (auto n = floating<double>(v)) return (add ? r.AddDouble(&m, &f, *n) : r.SetDouble(&m, &f, *n)), true;
      return false;
    case FieldDescriptor::CPPTYPE_FLOAT:
      if (auto n = single(v)) return (add ? r.AddFloat(&m, &f, *n) : r.SetFloat(&m, &f, *n)), true;
      return false;
    default:
      return false;
  }
}

bool Reader::text(const json& v, Message& m, const Reflection& r, const FieldDescriptor& f, bool add) {
  if (!v.is_string()) return false;
  const auto& s = v.get_ref<const std::string&>();
  if (f.type() == FieldDescriptor::TYPE_BYTES) {
    auto bytes = base64(s);
    if (!bytes) return false;
    add ? r.AddString(&m, &f, std::move(*bytes)) : r.SetString(&m, &f, std::move(*bytes));
    return true;
  }
  if (!is_utf8(s)) return false;  // doc.dump() throws on it
  add ? r.AddString(&m, &f, s) : r.SetString(&m, &f, s);
  return true;
}

bool Reader::well_known(const json& v, Message& m, int depth) {
  switch (m.GetDescriptor()->well_known_type()) {
    case Descriptor::WELLKNOWNTYPE_STRUCT:
      if (auto* s = dynamic_cast<google::protobuf::Struct*>(&m)) return fields(v, *s, depth);
      return false;
    case Descriptor::WELLKNOWNTYPE_VALUE:
      if (auto* out = dynamic_cast<Value*>(&m)) return value(v, *out, depth);
      return false;
    case Descriptor::WELLKNOWNTYPE_LISTVALUE:
      if (auto* l = dynamic_cast<google::protobuf::ListValue*>(&m)) return list(v, *l, depth);
      return false;
    default:  // Any, Timestamp, Duration, FieldMask, wrappers, Empty
      return false;
  }
}

bool Reader::value(const json& v, Value& out, int depth) {
  if (depth > kMaxDepth) return false;
  switch (v.type()) {
    case json::value_t::null:
      out.set_null_value(google::protobuf::NULL_VALUE);
      return true;
    case json::value_t::boolean:
      out.set_bool_value(v.get<bool>());
      return true;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      if (auto d = floating<double>(v)) return out.set_number_value(*d), true;
      return false;
    case json::value_t::string:
      if (!is_utf8(v.get_ref<const std::string&>())) return false;
      out.set_string_value(v.get_ref<const std::string&>());
      return true;
    case json::value_t::object:
      return fields(v, *out.mutable_struct_value(), depth + 1);
    case json::value_t::array:
      return list(v, *out.mutable_list_value(), depth + 1);
    default:  // binary, discarded
      return false;
  }
}

bool Reader::fields(const json& v, google::protobuf::Struct& out, int depth) {
  if (depth > kMaxDepth || !v.is_object()) return false;
  auto& map = *out.mutable_fields();
  for (const auto& [key, item] : v.get_ref<const json::object_t&>()) {
    if (!is_utf8(key) || !value(item, map[key], depth + 1)) return false;
  }
  return true;
}

bool Reader::list(const json& v, google::protobuf::ListValue& out, int depth) {
  if (depth > kMaxDepth || !v.is_array()) return false;
  const auto& items = v.get_ref<const json::array_t&>();
  out.mutable_values()->Reserve(static_cast<int>(items.size()));
  for (const auto& item : items) {
    if (!value(item, *out.add_values(), depth + 1)) return false;
  }
  return true;
}

}  // namespace

bool read_message(const json& doc, Message& out) {
  return Reader().message(doc, out, 0);
}

// What read_message checks of a member before it reads one.
bool readable_field(const Message& m, const FieldDescriptor& f) {
  return m.GetDescriptor()->well_known_type() == Descriptor::WELLKNOWNTYPE_UNSPECIFIED &&
         m.GetDescriptor()->file()->syntax() == FileDescriptor::SYNTAX_PROTO3 && plain_json_name(f);
}

bool read_field(const json& v, Message& m, const FieldDescriptor& f, int depth) {
  return readable_field(m, f) && Reader().field(v, m, *m.GetReflection(), f, depth);
}

bool read_element(const json& v, Message& m, const FieldDescriptor& f, int depth) {
  return readable_field(m, f) && !f.is_map() && f.is_repeated() && !v.is_null() &&
         Reader().element(v, m, *m.GetReflection(), f, true, depth);
}

bool read_value(const json& v, Value& out, int depth) {
  return Reader().value(v, out, depth);
}

}  // namespace owrap::proto_json
