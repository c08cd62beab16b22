// The README demo (examples/demo.sh) runs to its end: the script checks
// every step itself and exits 1 at the first that does not show what it
// should, so this keeps the demo working as the code under it changes.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>

#include <chrono>

using namespace owrap::test;
using Catch::Contains;

TEST_CASE("the README demo shows every step it claims, in well under a minute", "[demo]") {
  std::string build = wrapper_bin();
  build.erase(build.rfind("/tools/"));
  std::string out, err;
  auto start = std::chrono::steady_clock::now();
  int rc = run_command({"/bin/bash", std::string(OWRAP_SOURCE_DIR) + "/examples/demo.sh", build}, &out, &err);
  auto took = std::chrono::steady_clock::now() - start;
  INFO(out);
  INFO(err);
  REQUIRE(rc == 0);
  CHECK_THAT(out, Contains("demo: every step showed what it should"));
  // A few seconds normally; generous for a loaded 2-core box.
  CHECK(took < std::chrono::seconds(30));
}
