#include "common/toml_reader.h"

#include <catch2/catch.hpp>

using namespace owrap;
using Catch::Contains;

TEST_CASE("the shared TOML reader names the full key of every error, arrays of tables included", "[config][toml]") {
  toml::table root = toml::parse(R"(
[wrapper]
name = 3
[[hooks]]
name = "quota"
timeout_ms = 2000
[[hooks]]
name = "policy"
timeout_ms = -5
colour = "blue"
env = { A = "x", B = 1 }
phases = ["prepare", 7]
[delegate]
sub = [1, 2]
)");
  std::vector<std::string> errors;
  TomlSection doc(root, "", errors);
  doc.allow_only({"wrapper", "hooks"});
  CHECK(errors == std::vector<std::string>{"delegate: unknown key"});
  errors.clear();

  auto wrapper = doc.table("wrapper");
  REQUIRE(wrapper);
  CHECK_FALSE(wrapper->string("name"));
  auto hooks = doc.tables("hooks");
  REQUIRE(hooks.size() == 2);
  CHECK(hooks[0].path() == "hooks[0]");
  CHECK(hooks[0].string("name") == "quota");
  CHECK(hooks[0].millis("timeout_ms", 1, 60000) == std::chrono::milliseconds(2000));
  hooks[1].allow_only({"name", "timeout_ms", "env", "phases"});
  CHECK_FALSE(hooks[1].millis("timeout_ms", 1, 60000));
  CHECK(hooks[1].string_table("env")->at("A") == "x");
  CHECK_FALSE(hooks[1].strings("phases"));
  CHECK(doc.tables("wrapper").empty());  // a table, not an array of tables
  CHECK(doc.tables("missing").empty());

  std::string all;
  for (const auto& e : errors) all += e + "\n";
  CHECK_THAT(all, Contains("wrapper.name: must be a string"));
  CHECK_THAT(all, Contains("hooks[1].colour: unknown key"));
  CHECK_THAT(all, Contains("hooks[1].timeout_ms: must be between 1 and 60000"));
  CHECK_THAT(all, Contains("hooks[1].env.B: must be a string"));
  CHECK_THAT(all, Contains("hooks[1].phases[1]: must be a string"));
  CHECK_THAT(all, Contains("wrapper: must be an array of tables ([[wrapper]])"));
}
