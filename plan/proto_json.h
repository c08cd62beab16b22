// Reflection walks between messages and nlohmann::json that reproduce what
// protobuf 3.21's JSON utilities produce and accept (proto field names, no
// default values), for the message shapes they know. Whatever they are not
// sure to treat exactly as protobuf does (other well-known types, unknown enum
// numbers, invalid UTF-8, a wrong JSON type, a number out of range, deep
// nesting...) makes them answer false: plan/sandbox_json.cc then asks
// protobuf's own util, so results never differ, only the time they take.
// tests/plan/sandbox_json_test.cc holds the walks to protobuf's answers.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>
#include <nlohmann/json.hpp>

#include <string_view>

namespace owrap::proto_json {

// Nesting levels the walks handle themselves (each message, Struct, Value
// and ListValue counts one); protobuf's converter stops documents nested
// deeper than this, so past it its util decides.
inline constexpr int kMaxDepth = 32;

// false: `out` is unspecified and protobuf's util must render `message`.
bool write_message(const google::protobuf::Message& message, nlohmann::json& out);
bool write_value(const google::protobuf::Value& value, nlohmann::json& out);

// false: `out` is unspecified and protobuf's util must judge `doc` (an
// object); true: `out` (cleared by the caller) is what protobuf would parse.
bool read_message(const nlohmann::json& doc, google::protobuf::Message& out);
// One member of a document as read_message reads it, for a member `depth`
// levels down: field `f` of `m` (cleared by the caller) from `v`; one
// element appended to repeated `f`; a Value.
bool read_field(const nlohmann::json& v, google::protobuf::Message& m, const google::protobuf::FieldDescriptor& f,
                int depth);
bool read_element(const nlohmann::json& v, google::protobuf::Message& m, const google::protobuf::FieldDescriptor& f,
                  int depth);
bool read_value(const nlohmann::json& v, google::protobuf::Value& out, int depth);

// Well-formed UTF-8 as RFC 3629 defines it (no surrogates, overlongs or
// code points above U+10FFFF): what nlohmann::json dumps without throwing.
bool is_utf8(std::string_view text);

}  // namespace owrap::proto_json
