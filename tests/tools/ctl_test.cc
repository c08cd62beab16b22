// ctl against the memory driver and the wrapper; check-config; version.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>

#include <thread>

using namespace owrap::test;
using Catch::Contains;

namespace {
void exercise(const std::string& socket, const std::string& dc) {
  std::string out, err;
  auto ctl = [&](std::vector<std::string> args, const std::string& in = {}) {
    std::vector<std::string> argv = {wrapper_bin(), "ctl", "--socket", socket, "--timeout", "5s"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, &out, &err, in);
  };
  REQUIRE(ctl({"caps"}) == 0);
  CHECK_THAT(out, Contains("\"driver_version\""));
  CHECK(ctl({"listeners"}) == 1);
  CHECK_THAT(err, Contains("UNIMPLEMENTED"));
  REQUIRE(ctl({"ensure-workspace", "ws"}) == 0);
  std::string sandbox =
      R"({"id": "c-1", "name": "one", "workspace": "ws", "spec": {"template": {"image": "i", "driver_config": )" + dc +
      "}}}";
  REQUIRE(ctl({"validate", "-"}, sandbox) == 0);
  REQUIRE(ctl({"create", "-"}, sandbox) == 0);
  CHECK(ctl({"create", "-"}, sandbox) == 1);
  CHECK_THAT(err, Contains("ALREADY_EXISTS: sandbox \"c-1\" already exists"));
  REQUIRE(ctl({"get", "c-1"}) == 0);
  CHECK_THAT(out, Contains("\"id\":\"c-1\"") && Contains("\"type\":\"Ready\""));
  REQUIRE(ctl({"stop", "c-1"}) == 0);
  REQUIRE(ctl({"start", "c-1"}) == 0);
  REQUIRE(ctl({"list"}) == 0);
  CHECK_THAT(out, Contains("c-1"));
  REQUIRE(ctl({"delete", "c-1"}) == 0);
  CHECK_THAT(out, Contains("\"deleted\":true"));
  REQUIRE(ctl({"delete", "c-1"}) == 0);
  CHECK_THAT(out, Contains("\"deleted\":false"));
  CHECK(ctl({"get", "c-1"}) == 1);
  CHECK_THAT(err, Contains("NOT_FOUND"));
  REQUIRE(ctl({"delete-workspace", "ws"}) == 0);
  CHECK(ctl({"create", "-"}, "{not json") == 2);
  CHECK(ctl({"frobnicate"}) == 2);
  // watch: a create in the background produces events.
  std::thread creator([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::string o, e;
    run_command({wrapper_bin(), "ctl", "--socket", socket, "create", "-"}, &o, &e,
                R"({"id": "c-2", "spec": {"template": {"driver_config": )" + dc + "}}}");
  });
  int rc = ctl({"watch", "--count", "2"});
  creator.join();
  CHECK(rc == 0);
  CHECK_THAT(out, Contains("\"sandbox\":{\"sandbox\":{\"id\":\"c-2\"") && Contains("platform_event"));
}
}  // namespace

TEST_CASE("ctl works against the memory driver and against the wrapper", "[tools][ctl]") {
  TempDir dir;
  MemoryDriverProc direct(dir, "direct");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  exercise(direct.socket, "{}");
  exercise(one.socket, R"({"memory": {}})");
}

TEST_CASE("ctl reports an unreachable socket with a code and exit 1", "[tools][ctl]") {
  std::string out, err;
  CHECK(run_command({wrapper_bin(), "ctl", "--socket", "/nonexistent/x.sock", "--timeout", "1s", "list"}, &out, &err) ==
        1);
  CHECK_THAT(err, Contains("UNAVAILABLE"));
}

TEST_CASE("check-config prints the resolved config or every error", "[tools]") {
  TempDir dir;
  write_file(dir.file("good.toml"), wrapper_toml(WrapperSpec{"acme", "memory", "nested", {"x"}}, "/run/a.sock"));
  std::string out, err;
  REQUIRE(run_command({wrapper_bin(), "check-config", dir.file("good.toml")}, &out, &err) == 0);
  CHECK_THAT(out, Contains("\"config_mode\": \"nested\"") && Contains("\"ready_timeout_ms\": 10000"));
  write_file(dir.file("bad.toml"), "[wrapper]\nname = \"ACME\"\nsocket = 1\n[delegate]\nname = \"memory\"\n");
  CHECK(run_command({wrapper_bin(), "check-config", dir.file("bad.toml")}, &out, &err) == 1);
  CHECK_THAT(err, Contains("wrapper.name:") && Contains("wrapper.socket: must be a string") &&
                      Contains("delegate: exactly one of"));
  REQUIRE(run_command({wrapper_bin(), "version"}, &out, &err) == 0);
  CHECK_THAT(out, Contains("openshell-driver-wrapper 0.1.0"));
}

TEST_CASE("command-line mistakes get clear messages; check-config JSON ends with a newline", "[tools][defects]") {
  TempDir dir;
  std::string out, err;
  CHECK(run_command({wrapper_bin(), "check-config", dir.path()}, &out, &err) == 1);
  CHECK_THAT(err, Contains("is a directory, not a TOML file"));
  CHECK_THAT(err, !Contains("missing table"));
  CHECK(run_command({wrapper_bin(), "run", "--bogus"}, &out, &err) == 2);
  CHECK_THAT(err, Contains("unknown argument --bogus"));
  CHECK(run_command({wrapper_bin(), "run", "--config"}, &out, &err) == 2);
  CHECK_THAT(err, Contains("--config needs a value"));
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("run/acme.sock")));
  REQUIRE(run_command({wrapper_bin(), "check-config", dir.file("w.toml")}, &out, &err) == 0);
  REQUIRE_FALSE(out.empty());
  CHECK(out.back() == '\n');
}
