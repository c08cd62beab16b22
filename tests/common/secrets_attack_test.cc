// Hostile inputs for the DriverSandbox scrub's accessor walk (common/secrets.cc):
// unknown fields carried on the wire at every depth, map entries included,
// and the token in every form the wire allows.
#include "common/secrets.h"

#include "compute_driver.pb.h"
#include "plan/plan.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/message_differencer.h>
#include <catch2/catch.hpp>

#include <string>

namespace {

namespace v1 = openshell::compute::v1;

const char* const kToken = "sandbox-token-ATTACK";
const char* const kMarker = "unknown-marker-ATTACK";

std::string varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>(v | 0x80));
  out.push_back(static_cast<char>(v));
  return out;
}
std::string ld(int number, const std::string& payload) {
  return varint(static_cast<uint64_t>(number) << 3 | 2) + varint(payload.size()) + payload;
}
std::string vi(int number, uint64_t v) {
  return varint(static_cast<uint64_t>(number) << 3) + varint(v);
}
// An unknown field of every wire type, each holding the marker or the token.
std::string unknowns() {
  return ld(9001, kMarker) + ld(9002, kToken) + vi(9003, 7) + varint(9004u << 3 | 3) + ld(1, kMarker) +
         varint(9004u << 3 | 4) + varint(9005u << 3 | 5) + "\x01\x02\x03\x04";
}

// A Value holding `inner` as a string, with unknown fields.
std::string value_bytes(const std::string& s) {
  return ld(3, s) + unknowns();
}
// A Struct with one entry whose map entry carries unknown fields too.
std::string struct_bytes(const std::string& key, const std::string& value) {
  return ld(1, ld(1, key) + ld(2, value) + unknowns()) + unknowns();
}

std::string hostile_sandbox_bytes() {
  // ListValue of a Struct of a ListValue: every level marked.
  std::string list_inner = ld(1, value_bytes("deep")) + unknowns();
  std::string struct_in_list = struct_bytes("l", ld(6, list_inner) + unknowns());
  std::string list = ld(1, ld(5, struct_in_list) + unknowns()) + ld(1, value_bytes("x")) + unknowns();
  std::string driver_config = struct_bytes("pod", ld(6, list) + unknowns()) + struct_bytes("s", value_bytes("v"));
  std::string tmpl = ld(1, "img") + ld(4, ld(1, "team") + ld(2, "blue") + unknowns()) +
                     ld(6, ld(1, "TE") + ld(2, "1") + unknowns()) + ld(10, ld(2, "1") + unknowns()) +
                     ld(11, struct_bytes("zone", value_bytes("a"))) + ld(12, driver_config) + unknowns();
  std::string spec = ld(1, "debug") + ld(5, ld(1, "E") + ld(2, "2") + unknowns()) + ld(6, tmpl) +
                     ld(9, ld(1, vi(1, 1) + unknowns()) + unknowns()) + ld(11, kToken) + ld(12, "sh") +
                     ld(10, kToken) /* the reserved gpu_device */ + unknowns();
  std::string cond = ld(1, "Ready") + unknowns();
  std::string status = ld(1, "s") + ld(5, cond) + ld(5, ld(1, "Scheduled") + unknowns()) + unknowns();
  return ld(1, "sb") + ld(4, spec) + ld(5, status) + unknowns() + ld(4, ld(11, kToken) + unknowns());
}

}  // namespace

TEST_CASE("a DriverSandbox parsed from hostile bytes reaches no hook with its token or an unknown field", "[secrets]") {
  v1::DriverSandbox parsed;
  const std::string bytes = hostile_sandbox_bytes();
  REQUIRE(parsed.ParseFromString(bytes));
  REQUIRE(parsed.SerializeAsString().find(kMarker) != std::string::npos);
  REQUIRE(owrap::sandbox_walk_fits(*v1::DriverSandbox::descriptor()));

  v1::DriverSandbox expected = parsed;
  expected.DiscardUnknownFields();
  expected.mutable_spec()->clear_sandbox_token();
  REQUIRE(expected.SerializeAsString().find(kMarker) == std::string::npos);

  auto scrubbed = owrap::scrubbed_copy(parsed);
  const std::string out = scrubbed->SerializeAsString();
  CHECK(out.find(kMarker) == std::string::npos);
  CHECK(out.find(kToken) == std::string::npos);
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*scrubbed, expected));

  // The plan's view, on its arena, the same.
  auto plan = owrap::Plan::from(parsed);
  REQUIRE(plan);
  const std::string view = plan.value().view().SerializeAsString();
  CHECK(view.find(kMarker) == std::string::npos);
  CHECK(view.find(kToken) == std::string::npos);
  const std::string hv = owrap::hook_view(parsed).SerializeAsString();
  CHECK(hv.find(kMarker) == std::string::npos);
  CHECK(hv.find(kToken) == std::string::npos);
}
