// The write-back's own shortcuts against the long way: the changed-path tree
// (one buffer, children linked in token order) against the std::map tree it
// replaced, and write_changes_at() on random changes (string maps looked up
// once per map, Struct keys, whole subtrees, hidden entries) against
// write_changes() on the whole message, for generated messages and for
// dynamic ones (which take the reflection path for every key).
#include "plan/write_back.h"

#include "compute_driver.pb.h"

#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/struct.pb.h>
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <random>

using namespace owrap;
namespace v1 = openshell::compute::v1;

namespace {

// ------------------------------------------------ the changed-path tree

// ChangedPaths as it was: a std::map per node.
struct ReferencePaths {
  bool whole = false;
  std::map<std::string, ReferencePaths> children;
  void add(const PathTokens& path) {
    ReferencePaths* node = this;
    for (const auto& token : path) {
      if (node->whole) return;
      node = &node->children[token];
    }
    node->whole = true;
    node->children.clear();
  }
};

void require_same_tree(const ChangedPaths& tree, ChangedPaths::Node node, const ReferencePaths& ref) {
  REQUIRE(tree.whole(node) == ref.whole);
  auto it = ref.children.begin();
  for (auto c = tree.first_child(node); c != ChangedPaths::kNone; c = tree.next_sibling(c), ++it) {
    REQUIRE(it != ref.children.end());
    REQUIRE(tree.token(c) == it->first);
    require_same_tree(tree, c, it->second);
  }
  REQUIRE(it == ref.children.end());
}

template <class T>
const T& pick(std::mt19937& rng, const std::vector<T>& from) {
  return from[rng() % from.size()];
}

}  // namespace

TEST_CASE("the changed-path tree lists what a std::map tree would, in its order", "[plan][write_back]") {
  std::mt19937 rng(41);
  const std::vector<std::string> tokens = {"a", "b", "ab", "B", "", "spec", "a~b", "0", "10", "9", "zz"};
  for (int round = 0; round < 3000; round++) {
    std::vector<PathTokens> paths(1 + rng() % 12);  // they outlive the tree, as the plan's changes do
    ChangedPaths tree;
    ReferencePaths ref;
    for (auto& path : paths) {
      for (unsigned n = rng() % 20 == 0 ? 0 : 1 + rng() % 4; n > 0; n--) path.push_back(pick(rng, tokens));
      tree.add(path);
      ref.add(path);
    }
    require_same_tree(tree, 0, ref);
  }
}

namespace {

// ------------------------------------------------ write_changes_at against write_changes

const std::vector<std::string>& map_keys() {
  static const std::vector<std::string> k = {"team", "tenant", "a", "b", "OPENSHELL_SANDBOX_TOKEN", "x/y", ""};
  return k;
}

v1::DriverSandbox base_sandbox() {
  v1::DriverSandbox sb;
  sb.set_id("sb-1");
  sb.set_name("one");
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  tmpl->set_image("img:1");
  (*tmpl->mutable_labels())["team"] = "blue";
  (*tmpl->mutable_labels())["a"] = "1";
  (*tmpl->mutable_environment())["b"] = "2";
  (*sb.mutable_spec()->mutable_environment())["team"] = "t";
  auto& fields = *tmpl->mutable_driver_config()->mutable_fields();
  fields["a"].set_string_value("x");
  (*fields["b"].mutable_struct_value()->mutable_fields())["team"].set_number_value(3);
  return sb;
}

google::protobuf::Value random_value(std::mt19937& rng) {
  google::protobuf::Value v;
  switch (rng() % 4) {
    case 0:
      v.set_string_value(pick(rng, map_keys()));
      break;
    case 1:
      v.set_number_value(rng() % 3);
      break;
    case 2:
      (*v.mutable_struct_value()->mutable_fields())[pick(rng, map_keys())].set_bool_value(rng() % 2);
      break;
    default:
      v.mutable_list_value()->add_values()->set_string_value("l");
  }
  return v;
}

using StringMap = google::protobuf::Map<std::string, std::string>;

// One random change to `after`, its path added to `paths`.
void change(std::mt19937& rng, v1::DriverSandbox& after, std::vector<PathTokens>& paths) {
  const std::string key = pick(rng, map_keys());
  auto* tmpl = after.mutable_spec()->mutable_template_();
  auto set_or_erase = [&](StringMap& map, PathTokens path) {
    if (rng() % 3 == 0) {
      map.erase(key);
    } else {
      map[key] = pick(rng, map_keys());
    }
    path.push_back(key);
    paths.push_back(std::move(path));
  };
  switch (rng() % 8) {
    case 0:
      return set_or_erase(*tmpl->mutable_labels(), {"spec", "template", "labels"});
    case 1:
      return set_or_erase(*tmpl->mutable_environment(), {"spec", "template", "environment"});
    case 2:
      return set_or_erase(*after.mutable_spec()->mutable_environment(), {"spec", "environment"});
    case 3: {
      auto& fields = *tmpl->mutable_driver_config()->mutable_fields();
      if (rng() % 3 == 0) {
        fields.erase(key);
      } else {
        fields[key] = random_value(rng);
      }
      paths.push_back({"spec", "template", "driver_config", key});
      return;
    }
    case 4: {  // beneath a Struct key
      auto& inner = *(*tmpl->mutable_driver_config()->mutable_fields())["b"].mutable_struct_value()->mutable_fields();
      inner[key] = random_value(rng);
      paths.push_back({"spec", "template", "driver_config", "b", key});
      return;
    }
    case 5:
      tmpl->set_image(key);
      paths.push_back({"spec", "template", "image"});
      return;
    case 6:  // a subtree written whole
      if (rng() % 2 == 0) {
        tmpl->clear_labels();
        (*tmpl->mutable_labels())[key] = "whole";
        paths.push_back({"spec", "template", "labels"});
      } else {
        tmpl->mutable_platform_config()->Clear();
        (*tmpl->mutable_platform_config()->mutable_fields())[key].set_string_value("p");
        paths.push_back({"spec", "template", "platform_config"});
      }
      return;
    default:
      after.set_name(key);
      paths.push_back({"name"});
  }
}

std::unique_ptr<google::protobuf::Message> as_dynamic(const google::protobuf::Message& m,
                                                      google::protobuf::DynamicMessageFactory& factory) {
  std::unique_ptr<google::protobuf::Message> out(factory.GetPrototype(m.GetDescriptor())->New());
  REQUIRE(out->ParseFromString(m.SerializeAsString()));
  return out;
}

}  // namespace

TEST_CASE("write_changes_at writes what write_changes writes, on random changes", "[plan][write_back]") {
  std::mt19937 rng(43);
  google::protobuf::DynamicMessageFactory factory;
  int compared = 0;
  for (int round = 0; round < 3000; round++) {
    const v1::DriverSandbox before = base_sandbox();
    v1::DriverSandbox after = before;
    std::vector<PathTokens> paths;
    for (unsigned n = 1 + rng() % 5; n > 0; n--) change(rng, after, paths);
    // The request holds what the view never showed, some of it under a key
    // the change also writes.
    v1::DriverSandbox target = before;
    (*target.mutable_spec()->mutable_environment())["OPENSHELL_SANDBOX_TOKEN"] = "hidden";
    if (round % 2) (*target.mutable_spec()->mutable_template_()->mutable_labels())[pick(rng, map_keys())] = "hidden";
    if (round % 3 == 0) target.mutable_spec()->set_sandbox_token("secret");
    ChangedPaths changed;
    for (const auto& path : paths) changed.add(path);
    INFO("after " << after.ShortDebugString() << " target " << target.ShortDebugString());

    v1::DriverSandbox by_paths = target;
    write_changes_at(before, after, by_paths, changed);
    v1::DriverSandbox whole = target;
    v1::DriverSandbox after_copy = after;
    write_changes(before, after_copy, whole);
    REQUIRE(canonical_bytes(by_paths) == canonical_bytes(whole));

    // Dynamic messages have no generated maps: every key by reflection.
    auto dyn_before = as_dynamic(before, factory);
    auto dyn_after = as_dynamic(after, factory);
    auto dyn_target = as_dynamic(target, factory);
    write_changes_at(*dyn_before, *dyn_after, *dyn_target, changed);
    REQUIRE(canonical_bytes(*dyn_target) == canonical_bytes(by_paths));
    compared++;
  }
  CHECK(compared == 3000);
}
