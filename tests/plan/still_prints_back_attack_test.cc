// MessageTarget::still_prints_back() against the whole walk, on a root type
// with every kind of Value-holding field (singular and repeated Value,
// Struct, ListValue, a Value in a oneof) and itself nested, so that writes
// land at every depth up to and past the printable one.
#include "plan/message_target.h"
#include "plan/paths.h"
#include "tests/plan/plan_pair.h"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/struct.pb.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

using namespace owrap;
using nlohmann::json;
namespace pb = google::protobuf;

namespace {

void add_field(pb::DescriptorProto& m, const char* name, int number, const char* type, bool repeated, int oneof = -1) {
  auto* f = m.add_field();
  f->set_name(name);
  f->set_number(number);
  f->set_type(type ? pb::FieldDescriptorProto::TYPE_MESSAGE : pb::FieldDescriptorProto::TYPE_STRING);
  if (type) f->set_type_name(type);
  f->set_label(repeated ? pb::FieldDescriptorProto::LABEL_REPEATED : pb::FieldDescriptorProto::LABEL_OPTIONAL);
  if (oneof >= 0) f->set_oneof_index(oneof);
}

const pb::Descriptor* root_type(pb::DescriptorPool& pool) {
  pb::FileDescriptorProto file;
  file.set_name("still_prints_back_attack.proto");
  file.set_syntax("proto3");
  file.set_package("attack");
  file.add_dependency("google/protobuf/struct.proto");
  auto& m = *file.add_message_type();
  m.set_name("Root");
  m.add_oneof_decl()->set_name("o");
  add_field(m, "v", 1, ".google.protobuf.Value", false);
  add_field(m, "rv", 2, ".google.protobuf.Value", true);
  add_field(m, "lv", 3, ".google.protobuf.ListValue", false);
  add_field(m, "s", 4, ".google.protobuf.Struct", false);
  add_field(m, "child", 5, ".attack.Root", false);
  add_field(m, "kids", 6, ".attack.Root", true);
  add_field(m, "ov", 7, ".google.protobuf.Value", false, 0);
  add_field(m, "os", 8, nullptr, false, 0);
  add_field(m, "rs", 9, ".google.protobuf.Struct", true);
  add_field(m, "name", 10, nullptr, false);
  REQUIRE(pool.BuildFile(file) != nullptr);
  return pool.FindMessageTypeByName("attack.Root");
}

}  // namespace

TEST_CASE("still_prints_back is the whole walk at every depth of a self-nested root", "[plan][attack]") {
  pb::DescriptorPool pool(pb::DescriptorPool::generated_pool());
  const pb::Descriptor* type = root_type(pool);
  pb::DynamicMessageFactory factory(&pool);
  factory.SetDelegateToGeneratedFactory(true);
  const pb::Message* prototype = factory.GetPrototype(type);
  static const std::vector<std::string> tails = {
      "/v",    "/v/k",  "/v/k/k", "/v/new",  "/v/0",    "/rv",   "/rv/0",     "/rv/-",  "/rv/0/k",
      "/lv",   "/lv/0", "/lv/-",  "/lv/1/k", "/s",      "/s/k",  "/s/k/k",    "/s/n",   "/ov",
      "/ov/k", "/rs",   "/rs/0",  "/rs/-",   "/rs/0/k", "/kids", "/kids/0/v", "/child", "/child/v"};
  std::mt19937 rng(91);
  int yes = 0, no = 0;
  for (int round = 0; round < 20000; round++) {
    std::unique_ptr<pb::Message> root(prototype->New());
    MessageTarget builder(*root);
    // A chain of children `depth` deep, each with every kind set.
    const int depth = static_cast<int>(rng() % 13);
    std::string prefix;
    try {
      for (int d = 0; d <= depth; d++) {
        for (const char* f : {"v", "ov", "s"}) {
          owrap::test::run_operation(
              builder, json{{"op", "add"}, {"path", prefix + "/" + f}, {"value", {{"k", {{"k", 1}}}, {"s", "x"}}}});
        }
        for (const char* f : {"rv", "lv"}) {
          owrap::test::run_operation(
              builder, json{{"op", "add"}, {"path", prefix + "/" + f}, {"value", json::array({json{{"k", 1}}, 2})}});
        }
        owrap::test::run_operation(
            builder, json{{"op", "add"}, {"path", prefix + "/rs"}, {"value", json::array({json{{"k", 1}}})}});
        owrap::test::run_operation(
            builder, json{{"op", "add"}, {"path", prefix + "/kids"}, {"value", json::array({json{{"name", "n"}}})}});
        if (d < depth)
          owrap::test::run_operation(builder,
                                     json{{"op", "add"}, {"path", prefix + "/child"}, {"value", json{{"name", "c"}}}});
        prefix += "/child";
      }
    } catch (const MessageTarget::Unsure&) {
      continue;  // a deep chain the target leaves to the JSON form
    }
    if (!MessageTarget::prints_back(*root)) continue;
    MessageTarget target(*root);
    std::string at;
    for (int d = static_cast<int>(rng() % (depth + 1)); d > 0; d--) at += "/child";
    json patches = json::array();
    for (unsigned n = 1 + rng() % 3; n > 0; n--) {
      patches.push_back(json{{"op", rng() % 4 == 0 ? "replace" : "add"},
                             {"path", at + tails[rng() % tails.size()]},
                             {"value", owrap::test::hostile_value(rng)}});
    }
    bool ran = true;
    try {
      for (const auto& raw : patches) owrap::test::run_operation(target, raw);
    } catch (const MessageTarget::Unsure&) {
      ran = false;
    }
    if (!ran) continue;
    const bool whole = MessageTarget::prints_back(*root);
    INFO(patches.dump(-1, ' ', false, json::error_handler_t::replace));
    REQUIRE(target.still_prints_back() == whole);
    (whole ? yes : no)++;
  }
  CHECK(yes > 200);
  CHECK(no > 200);
}
