// Checks a google.protobuf.Value the way serde_json::from_value decodes it into
// a Rust type, with serde's error texts, so the memory driver can refuse a
// driver_config word for word as an upstream OpenShell driver would. Upstream
// turns the Struct into a serde_json::Value (every number an f64, maps with
// sorted keys) and decodes with `deny_unknown_fields`; serde stops at the
// first error, so a check reports one error.
#pragma once

#include <google/protobuf/struct.pb.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace owrap::memory::serde {

using google::protobuf::Value;

struct Error {
  // Where it happened: "" (the root), "pod.tolerations[0]", ... Serde itself
  // names no path; callers add it so a nested error can be found.
  std::string path;
  std::string message;
  // "path: message", or the message alone at the root.
  std::string text() const;
};

using Check = std::function<std::optional<Error>(const Value&, const std::string& path)>;

struct Field {
  const char* name;
  Check check;
  // Fields without #[serde(default)] (inside enum variants): absent is "missing field".
  bool required = false;
};

struct Variant {
  const char* name;
  std::vector<Field> fields;
};

// serde's texts.
std::string unexpected(const Value& v);  // "string \"x\"", "floating point `1.0`", "map", ...
std::string invalid_type(const Value& v, const std::string& expected);
std::string one_of(const std::vector<std::string>& names);  // "`a`", "`a` or `b`", "one of `a`, `b`, `c`"
std::string unknown_field(const std::string& field, const std::vector<std::string>& expected);
std::string format_f64(double v);  // as serde_json prints a float (ryu)

// Leaf and container checks, named after the Rust type they stand for.
Check string();                                      // String
Check boolean();                                     // bool
Check f64();                                         // f64
Check integer();                                     // an integral number
Check optional(Check inner);                         // Option<T>: null is None
Check string_map();                                  // BTreeMap<String, String>
Check seq(Check element);                            // Vec<T>
Check non_empty_string_list();                       // openshell_core's deserialize_optional_non_empty_string_list
Check unit_enum(std::vector<std::string> variants);  // unit variants, rename_all = "snake_case"
// #[serde(default, deny_unknown_fields)] struct `type_name`.
Check object(std::string type_name, std::vector<Field> fields);
// #[serde(tag = ..., deny_unknown_fields)] enum `type_name` with struct variants.
Check tagged(std::string type_name, std::string tag, std::vector<Variant> variants);

}  // namespace owrap::memory::serde
