// The plan's arena (plan/plan.cc): what a call keeps on it.
#include "plan/plan.h"

#include "compute_driver.pb.h"

#include <google/protobuf/arena.h>
#include <catch2/catch.hpp>

#include <string>

namespace v1 = openshell::compute::v1;
using nlohmann::json;
using owrap::PatchRules;
using owrap::Plan;

namespace {

// A driver_config of `entries` small members: a few bytes each on the wire,
// but a map node, a key string and a Value each in memory (about seven
// times the wire size on the arena).
v1::DriverSandbox many_small_members(int entries) {
  v1::DriverSandbox sb;
  sb.set_id("sb");
  (*sb.mutable_spec()->mutable_template_()->mutable_labels())["team"] = "blue";
  auto& fields = *sb.mutable_spec()->mutable_template_()->mutable_driver_config()->mutable_fields();
  for (int i = 0; i < entries; i++) fields["k" + std::to_string(i)].set_number_value(i);
  return sb;
}

}  // namespace

// Plan::kArenaBytes (256 KiB) bounds what the arena keeps; measured in the view's
// wire size, a view of many small members kept several times that: 16 hooks
// on a 19 KB view left 1.8 MB on the arena until the call ended.
TEST_CASE("many hooks on a view of many small members keep the plan's arena near its bound", "[plan][arena]") {
  const v1::DriverSandbox sandbox = many_small_members(1000);
  auto plan = Plan::from(sandbox);
  REQUIRE(plan.ok());
  REQUIRE(plan->view().ByteSizeLong() < 20 * 1024);
  for (int hook = 0; hook < 16; hook++) {
    std::string label = "h" + std::to_string(hook);
    json patches = json::array({{{"op", "add"}, {"path", "/spec/template/labels/" + label}, {"value", label}}});
    REQUIRE(plan->apply(label, patches, false, PatchRules{}).ok());
  }
  const google::protobuf::Arena* arena = plan->original().GetArena();
  REQUIRE(arena != nullptr);
  // The bound, a view past it (the first set's copy goes there whatever
  // its size), and the blocks' rounding.
  CHECK(arena->SpaceAllocated() <= 2 * 256 * 1024);
  v1::DriverSandbox target = sandbox;
  REQUIRE(plan->write_back(target).ok());
  CHECK(target.spec().template_().labels().size() == 17);
  CHECK(target.spec().template_().driver_config().fields().size() == 1000);
}
