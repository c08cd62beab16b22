// WireCheck must say "parses" exactly when libprotobuf's parser would: the
// unary relay passes a stage-less reply on as bytes only if it does, and
// answers INTERNAL otherwise. Checked against ParseFromString on real
// messages and on every truncation and many byte mutations of them.
#include "proxy/wire_check.h"

#include "compute_driver.pb.h"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace owrap;
namespace v1 = openshell::compute::v1;

namespace {

grpc::ByteBuffer buffer_of(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// The same bytes in several slices, as a large reply arrives.
grpc::ByteBuffer sliced(const std::string& bytes) {
  std::vector<grpc::Slice> slices;
  for (size_t i = 0; i < bytes.size(); i += 7) slices.emplace_back(bytes.substr(i, 7));
  return grpc::ByteBuffer(slices.data(), slices.size());
}

v1::DriverSandbox full_sandbox() {
  v1::DriverSandbox sb;
  sb.set_id("sb-1");
  sb.set_name("name-sb-1");
  sb.set_namespace_("default");
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  tmpl->set_image("ghcr.io/example/sandbox:1");
  (*tmpl->mutable_labels())["team"] = "blue";
  (*tmpl->mutable_labels())["ünïcode"] = "välue";
  (*sb.mutable_spec()->mutable_environment())["A"] = "1";
  REQUIRE(
      google::protobuf::util::JsonStringToMessage(
          R"({"cpu": 2, "tags": ["a", "b", {"deep": [1, 2, {"x": null}]}], "on": true})", tmpl->mutable_driver_config())
          .ok());
  sb.mutable_spec()->set_sandbox_token("tok");
  sb.mutable_status()->set_sandbox_name("n");
  return sb;
}

// Compares WireCheck with libprotobuf on `bytes` as `M`.
template <class M>
void agrees(const std::string& bytes, bool partial = false) {
  static const WireCheck check(*M::descriptor());
  google::protobuf::LogSilencer quiet;  // libprotobuf logs every string that is not UTF-8
  M m;
  bool protobuf = partial ? m.ParsePartialFromString(bytes) : m.ParseFromString(bytes);
  INFO("bytes (" << bytes.size() << "): " << google::protobuf::CEscape(bytes));
  CHECK(check.parses(buffer_of(bytes)) == protobuf);
  CHECK(check.parses(sliced(bytes)) == protobuf);
}

// Every truncation, and single-byte changes that hit tags, lengths, varint
// continuation bits and string contents.
template <class M>
void agrees_on_mutations(const std::string& good, bool partial = false) {
  agrees<M>(good, partial);
  for (size_t n = 0; n < good.size(); n++) agrees<M>(good.substr(0, n), partial);
  const unsigned char values[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x07, 0x08, 0x0a, 0x0b,
                                  0x0c, 0x0d, 0x0e, 0x0f, 0x7f, 0x80, 0xc3, 0xff};
  for (size_t i = 0; i < good.size(); i++) {
    for (unsigned char v : values) {
      std::string bad = good;
      bad[i] = static_cast<char>(v);
      agrees<M>(bad, partial);
    }
    std::string flipped = good;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x80);
    agrees<M>(flipped, partial);
  }
}

}  // namespace

TEST_CASE("WireCheck agrees with libprotobuf on replies and their corruptions", "[proxy][wire_check]") {
  v1::GetSandboxResponse get;
  *get.mutable_sandbox() = full_sandbox();
  agrees_on_mutations<v1::GetSandboxResponse>(get.SerializeAsString());

  v1::ListSandboxesResponse list;
  *list.add_sandboxes() = full_sandbox();
  *list.add_sandboxes() = full_sandbox();
  agrees_on_mutations<v1::ListSandboxesResponse>(list.SerializeAsString());

  agrees_on_mutations<v1::GetCapabilitiesResponse>(v1::GetCapabilitiesResponse().SerializeAsString());
  v1::DeleteSandboxResponse del;
  del.set_deleted(true);
  agrees_on_mutations<v1::DeleteSandboxResponse>(del.SerializeAsString());
}

TEST_CASE("WireCheck: unknown fields, groups, UTF-8, empty and missing messages", "[proxy][wire_check]") {
  std::string sandbox = full_sandbox().SerializeAsString();
  auto field = [](int number, int wire_type) { return std::string(1, static_cast<char>(number << 3 | wire_type)); };
  // A newer driver's field (number 15, every wire type) parses and is kept.
  agrees<v1::DriverSandbox>(sandbox + field(15, 0) + "\x96\x01");
  agrees<v1::DriverSandbox>(sandbox + field(15, 1) + std::string(8, 'x'));
  agrees<v1::DriverSandbox>(sandbox + field(15, 5) + std::string(4, 'x'));
  agrees<v1::DriverSandbox>(sandbox + field(15, 2) + "\x03\xff\xfe\xfd");  // unknown: bytes, no UTF-8 rule
  // Unknown groups: well formed, nested, unterminated, mismatched.
  agrees<v1::DriverSandbox>(sandbox + field(15, 3) + field(1, 0) + "\x01" + field(15, 4));
  agrees<v1::DriverSandbox>(sandbox + field(15, 3) + field(14, 3) + field(14, 4) + field(15, 4));
  agrees<v1::DriverSandbox>(sandbox + field(15, 3) + field(1, 0) + "\x01");
  agrees<v1::DriverSandbox>(sandbox + field(15, 3) + field(14, 4));
  agrees<v1::DriverSandbox>(sandbox + field(15, 4));
  // A known field sent with another wire type is an unknown field.
  agrees<v1::DriverSandbox>(sandbox + field(1, 0) + "\x05");
  // Strings must be UTF-8 (proto3), at any depth, map keys included.
  agrees<v1::DriverSandbox>(sandbox + field(1, 2) + "\x02\xc3\x28");
  agrees<v1::DriverSandbox>(sandbox + field(1, 2) + "\x02\xc3\xa9");
  agrees<v1::DriverSandbox>(sandbox + field(1, 2) + "\x0b" + "abcdefgh\xe2\x82\xac");
  agrees<v1::DriverSandbox>(sandbox + field(1, 2) + "\x0b" + "abcdefgh\xe2\x82\x28");
  v1::DriverSandbox with_key;
  (*with_key.mutable_spec()->mutable_environment())["KEY"] = "v";
  std::string key_bytes = with_key.SerializeAsString();
  key_bytes.replace(key_bytes.find("KEY"), 3, "K\xffY");
  agrees<v1::DriverSandbox>(key_bytes);
  // Overlong varints and lengths past the end.
  agrees<v1::DriverSandbox>(sandbox + field(15, 0) + std::string(10, '\x80') + "\x01");
  agrees<v1::DriverSandbox>(sandbox + field(15, 0) + std::string(9, '\xff') + "\x01");
  agrees<v1::DriverSandbox>(sandbox + field(15, 2) + "\xff\xff\xff\xff\x0f");
  // Empty is a valid message; no message at all is not.
  agrees<v1::GetSandboxResponse>("");
  CHECK_FALSE(WireCheck(*v1::GetSandboxResponse::descriptor()).parses(grpc::ByteBuffer()));
}

TEST_CASE("WireCheck: nesting depth as libprotobuf limits it", "[proxy][wire_check]") {
  // Each level is three messages deep (Value, Struct, the map entry).
  for (int levels : {10, 30, 32, 33, 34, 35, 40, 60}) {
    google::protobuf::Value v;
    v.set_string_value("leaf");
    for (int i = 0; i < levels; i++) {
      google::protobuf::Value outer;
      (*outer.mutable_struct_value()->mutable_fields())["k"] = v;
      v = outer;
    }
    INFO("levels " << levels);
    agrees<google::protobuf::Value>(v.SerializeAsString());
    google::protobuf::Value parsed;
    if (levels == 10) CHECK(parsed.ParseFromString(v.SerializeAsString()));
    if (levels == 60) CHECK_FALSE(parsed.ParseFromString(v.SerializeAsString()));  // the limit is in range
  }
}

TEST_CASE("WireCheck: packed numbers and proto2 strings", "[proxy][wire_check]") {
  // descriptor.proto is proto2 (strings are not UTF-8 checked) and has
  // packed repeated int32 fields.
  google::protobuf::SourceCodeInfo info;
  auto* loc = info.add_location();
  for (int i : {4, 0, 2, 300, 70000}) loc->add_path(i);
  loc->add_span(1);
  loc->set_leading_comments("caf\xc3\xa9 \xff");
  agrees_on_mutations<google::protobuf::SourceCodeInfo>(info.SerializeAsString(), true);
}
