#include "tools/memory_driver/serde_check.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace owrap::memory::serde {

namespace {

using google::protobuf::Struct;

std::string child(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// Rust's Debug for str: what serde prints for an unexpected string.
std::string debug_quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\0':
        out += "\\0";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[12];
          std::snprintf(buf, sizeof buf, "\\u{%x}", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::vector<std::string> sorted_keys(const Struct& s) {
  std::vector<std::string> keys;
  for (const auto& [key, _] : s.fields()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());  // serde_json's Map is a BTreeMap
  return keys;
}

std::vector<std::string> names_of(const std::vector<Field>& fields) {
  std::vector<std::string> names;
  for (const auto& f : fields) names.emplace_back(f.name);
  return names;
}

const Field* find_field(const std::vector<Field>& fields, const std::string& name) {
  for (const auto& f : fields)
    if (name == f.name) return &f;
  return nullptr;
}

// A struct's entries in serde's order (sorted keys, first error wins), then
// its missing required fields in declaration order. `skip` is an enum's tag.
std::optional<Error> check_fields(const Struct& s, const std::string& path, const std::vector<Field>& fields,
                                  const std::string& skip = {}) {
  for (const auto& key : sorted_keys(s)) {
    if (!skip.empty() && key == skip) continue;
    const Field* f = find_field(fields, key);
    if (f == nullptr) return Error{path, unknown_field(key, names_of(fields))};
    if (auto e = f->check(s.fields().at(key), child(path, key))) return e;
  }
  for (const auto& f : fields) {
    if (f.required && !s.fields().count(f.name)) return Error{path, std::string("missing field `") + f.name + "`"};
  }
  return std::nullopt;
}

bool is_null(const Value& v) {
  // value_to_json: NaN and infinities have no JSON number and become null.
  return v.kind_case() == Value::kNullValue || v.kind_case() == Value::KIND_NOT_SET ||
         (v.has_number_value() && !std::isfinite(v.number_value()));
}

bool is_blank(const std::string& s) {
  return s.find_first_not_of(" \t\n\r\v\f") == std::string::npos;
}

std::optional<Error> check_variant_name(const std::string& name, const std::vector<std::string>& variants,
                                        const std::string& path) {
  if (std::find(variants.begin(), variants.end(), name) != variants.end()) return std::nullopt;
  return Error{path, "unknown variant `" + name + "`, expected " + one_of(variants)};
}

}  // namespace

std::string Error::text() const {
  return path.empty() ? message : path + ": " + message;
}

std::string format_f64(double v) {
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, std::fabs(v), std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // shortest round trip: d[.ddd]e±XX
  auto e = sci.find('e');
  std::string digits = sci.substr(0, 1) + (e > 2 ? sci.substr(2, e - 2) : "");
  int length = static_cast<int>(digits.size());
  int kk = std::atoi(sci.c_str() + e + 1) + 1;  // 10^(kk-1) <= v < 10^kk
  std::string out = v < 0 ? "-" : "";
  // ryu's pretty printer, case by case.
  if (kk >= length && kk <= 16) return out + digits + std::string(kk - length, '0') + ".0";
  if (kk > 0 && kk <= 16) return out + digits.substr(0, kk) + "." + digits.substr(kk);
  if (kk > -5 && kk <= 0) return out + "0." + std::string(-kk, '0') + digits;
  std::string mantissa = length == 1 ? digits : digits.substr(0, 1) + "." + digits.substr(1);
  return out + mantissa + "e" + std::to_string(kk - 1);
}

std::string unexpected(const Value& v) {
  if (is_null(v)) return "null";
  switch (v.kind_case()) {
    case Value::kNumberValue:
      return "floating point `" + format_f64(v.number_value()) + "`";
    case Value::kStringValue:
      return "string " + debug_quoted(v.string_value());
    case Value::kBoolValue:
      return std::string("boolean `") + (v.bool_value() ? "true" : "false") + "`";
    case Value::kListValue:
      return "sequence";
    default:
      return "map";
  }
}

std::string invalid_type(const Value& v, const std::string& expected) {
  return "invalid type: " + unexpected(v) + ", expected " + expected;
}

std::string one_of(const std::vector<std::string>& names) {
  if (names.size() == 1) return "`" + names[0] + "`";
  if (names.size() == 2) return "`" + names[0] + "` or `" + names[1] + "`";
  std::string out = "one of ";
  for (size_t i = 0; i < names.size(); i++) out += (i ? ", `" : "`") + names[i] + "`";
  return out;
}

std::string unknown_field(const std::string& field, const std::vector<std::string>& expected) {
  if (expected.empty()) return "unknown field `" + field + "`, there are no fields";
  return "unknown field `" + field + "`, expected " + one_of(expected);
}

Check string() {
  return [](const Value& v, const std::string& path) -> std::optional<Error> {
    if (v.has_string_value()) return std::nullopt;
    return Error{path, invalid_type(v, "a string")};
  };
}

Check boolean() {
  return [](const Value& v, const std::string& path) -> std::optional<Error> {
    if (v.has_bool_value()) return std::nullopt;
    return Error{path, invalid_type(v, "a boolean")};
  };
}

Check f64() {
  return [](const Value& v, const std::string& path) -> std::optional<Error> {
    if (v.has_number_value() && !is_null(v)) return std::nullopt;
    return Error{path, invalid_type(v, "f64")};
  };
}

Check integer() {
  return [](const Value& v, const std::string& path) -> std::optional<Error> {
    if (v.has_number_value() && !is_null(v) && std::trunc(v.number_value()) == v.number_value()) return std::nullopt;
    return Error{path, invalid_type(v, "i64")};
  };
}

Check optional(Check inner) {
  return [inner](const Value& v, const std::string& path) -> std::optional<Error> {
    if (is_null(v)) return std::nullopt;
    return inner(v, path);
  };
}

Check string_map() {
  return [](const Value& v, const std::string& path) -> std::optional<Error> {
    if (!v.has_struct_value()) return Error{path, invalid_type(v, "a map")};
    for (const auto& key : sorted_keys(v.struct_value())) {
      const Value& item = v.struct_value().fields().at(key);
      if (!item.has_string_value()) return Error{child(path, key), invalid_type(item, "a string")};
    }
    return std::nullopt;
  };
}

Check seq(Check element) {
  return [element](const Value& v, const std::string& path) -> std::optional<Error> {
    if (!v.has_list_value()) return Error{path, invalid_type(v, "a sequence")};
    for (int i = 0; i < v.list_value().values_size(); i++) {
      if (auto e = element(v.list_value().values(i), index(path, i))) return e;
    }
    return std::nullopt;
  };
}

Check non_empty_string_list() {
  return [](const Value& v, const std::string& path) -> std::optional<Error> {
    if (auto e = seq(string())(v, path)) return e;
    const auto& items = v.list_value().values();
    if (items.empty()) return Error{path, "must be a non-empty list of strings"};
    for (int i = 0; i < items.size(); i++) {
      if (is_blank(items[i].string_value()))
        return Error{path, "[" + std::to_string(i) + "] must be a non-empty string"};
    }
    return std::nullopt;
  };
}

Check unit_enum(std::vector<std::string> variants) {
  return [variants](const Value& v, const std::string& path) -> std::optional<Error> {
    if (v.has_string_value()) return check_variant_name(v.string_value(), variants, path);
    if (!v.has_struct_value()) return Error{path, invalid_type(v, "string or map")};
    // {"variant": null} is serde's other spelling of a unit variant.
    const auto& fields = v.struct_value().fields();
    if (fields.size() != 1) return Error{path, "invalid value: map, expected map with a single key"};
    if (auto e = check_variant_name(fields.begin()->first, variants, path)) return e;
    if (is_null(fields.begin()->second)) return std::nullopt;
    return Error{path, invalid_type(fields.begin()->second, "unit")};
  };
}

Check object(std::string type_name, std::vector<Field> fields) {
  // A list is refused too, although serde_json would decode a struct from a
  // positional array: nobody writes one on purpose.
  return [type_name, fields](const Value& v, const std::string& path) -> std::optional<Error> {
    if (!v.has_struct_value()) return Error{path, invalid_type(v, "struct " + type_name)};
    return check_fields(v.struct_value(), path, fields);
  };
}

Check tagged(std::string type_name, std::string tag, std::vector<Variant> variants) {
  std::vector<std::string> names;
  for (const auto& variant : variants) names.emplace_back(variant.name);
  return [type_name, tag, variants, names](const Value& v, const std::string& path) -> std::optional<Error> {
    if (!v.has_struct_value()) return Error{path, invalid_type(v, "internally tagged enum " + type_name)};
    const auto& fields = v.struct_value().fields();
    auto it = fields.find(tag);
    if (it == fields.end()) return Error{path, "missing field `" + tag + "`"};
    if (!it->second.has_string_value()) return Error{path, invalid_type(it->second, "variant identifier")};
    if (auto e = check_variant_name(it->second.string_value(), names, path)) return e;
    for (const auto& variant : variants) {
      if (it->second.string_value() == variant.name) return check_fields(v.struct_value(), path, variant.fields, tag);
    }
    return std::nullopt;
  };
}

}  // namespace owrap::memory::serde
