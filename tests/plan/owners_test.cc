// PathOwners against a plain reading of its rules on random claims: a path
// conflicts with an owned path of another hook at it, above it or beneath
// it, and a claim replaces what was owned at and beneath its path. Keys
// that share a prefix but not a path ("/a-b", "/a.b", "/a0" beside "/a")
// sort around "/a/..." and must not be taken for it.
#include "plan/owners.h"

#include <catch2/catch.hpp>

#include <random>

using nlohmann::json;
using owrap::OwnerMap;
using owrap::PathOwners;

namespace {

bool below(const std::string& owned, const std::string& pointer) {
  return owned.size() > pointer.size() && owned.compare(0, pointer.size(), pointer) == 0 &&
         owned[pointer.size()] == '/';
}

// The first conflicting owned path in map order, as the rules read.
std::optional<std::string> reference_conflict(const OwnerMap& owners, const std::string& pointer,
                                              const std::string& hook) {
  // Above and at, from the whole plan down; then beneath, in order.
  for (size_t slash = 0; slash != std::string::npos; slash = pointer.find('/', slash + 1)) {
    auto it = owners.find(pointer.substr(0, slash));
    if (it != owners.end() && it->second != hook) return it->first;
  }
  if (auto it = owners.find(pointer); it != owners.end() && it->second != hook) return it->first;
  for (const auto& [owned, owner] : owners) {
    if (below(owned, pointer) && owner != hook) return owned;
  }
  return std::nullopt;
}

std::string random_pointer(std::mt19937& rng) {
  static const char* tokens[] = {"a", "a-b", "a.b", "a0", "ab", "b", "a~1c", ""};
  std::string out;
  for (unsigned n = 1 + rng() % 3; n > 0; n--) out += std::string("/") + tokens[rng() % 8];
  return out;
}

}  // namespace

TEST_CASE("owners: conflicts and claims follow the rules beside look-alike keys", "[plan][owners]") {
  std::mt19937 rng(5);
  int conflicts = 0, free = 0;
  for (int round = 0; round < 300; round++) {
    PathOwners owners;
    OwnerMap reference;
    for (int step = 0; step < 30; step++) {
      const std::string pointer = random_pointer(rng);
      const std::string hook = "h" + std::to_string(rng() % 3);
      auto conflict = owners.conflict(pointer, hook);
      auto want = reference_conflict(reference, pointer, hook);
      INFO("pointer " << pointer << " hook " << hook);
      REQUIRE(conflict.has_value() == want.has_value());
      if (conflict) {
        REQUIRE(conflict->path == *want);
        REQUIRE(conflict->hook == reference.at(*want));
        conflicts++;
        continue;
      }
      free++;
      const json value = rng() % 2 ? json("v") : json{{"x", 1}, {"y", json::object()}};
      owners.claim_set(pointer, value, hook);
      for (auto it = reference.begin(); it != reference.end();) {
        it = it->first == pointer || below(it->first, pointer) ? reference.erase(it) : std::next(it);
      }
      if (value.is_object()) {
        reference[pointer + "/x"] = hook;
        reference[pointer + "/y"] = hook;
      } else {
        reference[pointer] = hook;
      }
      REQUIRE(owners.by_path() == reference);
    }
  }
  CHECK(conflicts > 500);
  CHECK(free > 500);
}
