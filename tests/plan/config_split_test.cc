#include "plan/config_split.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>

using namespace owrap;
namespace v1 = openshell::compute::v1;

namespace {
v1::DriverSandboxTemplate tmpl_with(const std::string& json) {
  v1::DriverSandboxTemplate t;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, t.mutable_driver_config()).ok());
  (*t.mutable_platform_config()->mutable_fields())["runtime_class_name"].set_string_value("gvisor");
  return t;
}
std::string json_of(const google::protobuf::Message& m) {
  std::string out;
  REQUIRE(google::protobuf::util::MessageToJsonString(m, &out).ok());
  return out;
}
}  // namespace

TEST_CASE("nested mode peels the delegate's block and keeps platform_config", "[plan]") {
  DriverConfigSplitter s({"acme", "kubernetes", ConfigMode::kNested, {"ipam"}});
  auto t = tmpl_with(R"({"kubernetes": {"pod": {"priority_class_name": "high"}}, "ipam": {"pool": "a"}})");
  google::protobuf::Struct own;
  REQUIRE(s.split(t, own).ok());
  CHECK(json_of(t.driver_config()) == R"({"pod":{"priority_class_name":"high"}})");
  CHECK(json_of(own) == R"({"ipam":{"pool":"a"}})");
  CHECK(t.platform_config().fields().at("runtime_class_name").string_value() == "gvisor");
}

TEST_CASE("nested mode: absent block stays absent, missing base key clears it", "[plan]") {
  DriverConfigSplitter s({"acme", "kubernetes", ConfigMode::kNested, {}});
  v1::DriverSandboxTemplate none;
  google::protobuf::Struct own;
  REQUIRE(s.split(none, own).ok());
  CHECK_FALSE(none.has_driver_config());
  auto empty = tmpl_with("{}");
  REQUIRE(s.split(empty, own).ok());
  CHECK_FALSE(empty.has_driver_config());
}

TEST_CASE("nested mode rejects unclaimed keys and non-object blocks with the path", "[plan]") {
  DriverConfigSplitter s({"acme", "kubernetes", ConfigMode::kNested, {}});
  google::protobuf::Struct own;
  auto typo = tmpl_with(R"({"kubernetes": {}, "typo": 1})");
  auto st = s.split(typo, own);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(st.error_message(), Catch::StartsWith("driver_config.acme.typo: unknown key"));
  auto scalar = tmpl_with(R"({"kubernetes": "x"})");
  st = s.split(scalar, own);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(st.error_message() == "driver_config.acme.kubernetes: must be an object");
}

TEST_CASE("inline mode removes only the wrapper's key", "[plan]") {
  DriverConfigSplitter s({"acme", "kubernetes", ConfigMode::kInline, {"ipam"}});
  auto t = tmpl_with(R"({"pod": {"runtime_class_name": "kata"}, "acme": {"ipam": {"pool": "b"}}})");
  google::protobuf::Struct own;
  REQUIRE(s.split(t, own).ok());
  CHECK(json_of(t.driver_config()) == R"({"pod":{"runtime_class_name":"kata"}})");
  CHECK(json_of(own) == R"({"ipam":{"pool":"b"}})");

  auto untouched = tmpl_with(R"({"pod": {}})");
  REQUIRE(s.split(untouched, own).ok());
  CHECK(json_of(untouched.driver_config()) == R"({"pod":{}})");

  auto only_ours = tmpl_with(R"({"acme": {"ipam": {}}})");
  REQUIRE(s.split(only_ours, own).ok());
  CHECK_FALSE(only_ours.has_driver_config());
}

TEST_CASE("inline mode rejects unclaimed keys and non-object blocks with the path", "[plan]") {
  DriverConfigSplitter s({"acme", "kubernetes", ConfigMode::kInline, {}});
  google::protobuf::Struct own;
  auto typo = tmpl_with(R"({"pod": {}, "acme": {"typo": true}})");
  auto st = s.split(typo, own);
  CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(st.error_message(), Catch::StartsWith("driver_config.kubernetes.acme.typo: unknown key"));
  auto list = tmpl_with(R"({"acme": [1]})");
  st = s.split(list, own);
  CHECK(st.error_message() == "driver_config.kubernetes.acme: must be an object");
}
