#include "proxy/config.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <regex>
#include <set>

using namespace owrap;

TEST_CASE("a full config resolves", "[config]") {
  auto cfg = parse_config(R"(
[wrapper]
name = "acme"
socket = "/run/openshell/acme.sock"
config_mode = "inline"
worker_threads = 3
[capabilities]
default_image = "img:1"
[delegate]
name = "kubernetes"
command = ["openshell-driver-kubernetes", "--bind-socket", "{socket}"]
env = { RUST_LOG = "info" }
ready_timeout_ms = 5000
)",
                          "t.toml");
  REQUIRE(cfg.ok());
  CHECK(cfg->config_mode == ConfigMode::kInline);
  CHECK(cfg->delegate.command.size() == 3);
  CHECK(cfg->delegate.env.at("RUST_LOG") == "info");
  CHECK(cfg->delegate.ready_timeout.count() == 5000);
  CHECK(*cfg->default_image == "img:1");
  CHECK(cfg->to_json()["wrapper"]["config_mode"] == "inline");
  CHECK(cfg->worker_threads == 3);
}

TEST_CASE("every error names its TOML key", "[config]") {
  auto cfg = parse_config(R"(
[wrapper]
name = "Acme!"
socket = "/x.sock"
colour = "blue"
config_mode = "sideways"
worker_threads = 0
[delegate]
name = "kubernetes"
command = ["a"]
endpoint = "unix:///x.sock"
ready_timeout_ms = "soon"
[extra]
)",
                          "t.toml");
  REQUIRE_FALSE(cfg.ok());
  const std::string& e = cfg.error();
  CHECK_THAT(e, Catch::Contains("wrapper.name:"));
  CHECK_THAT(e, Catch::Contains("wrapper.colour: unknown key"));
  CHECK_THAT(e, Catch::Contains("wrapper.config_mode:"));
  CHECK_THAT(e, Catch::Contains("wrapper.worker_threads: must be between 1 and 64"));
  CHECK_THAT(e, Catch::Contains("delegate: exactly one of delegate.command and delegate.endpoint"));
  CHECK_THAT(e, Catch::Contains("delegate.ready_timeout_ms:"));
  CHECK_THAT(e, Catch::Contains("extra: unknown key"));
}

TEST_CASE("syntax errors carry a line number; driver names are checked", "[config]") {
  auto cfg = parse_config("[wrapper\nname=1", "bad.toml");
  REQUIRE_FALSE(cfg.ok());
  CHECK_THAT(cfg.error(), Catch::StartsWith("bad.toml:1:"));
  CHECK(valid_driver_name("acme-2_x"));
  CHECK_FALSE(valid_driver_name("Acme"));
  CHECK_FALSE(valid_driver_name(std::string(64, 'a')));
}

TEST_CASE("wrapper.resync_timeout_ms: default, range, resolved value", "[config]") {
  auto with = [](const std::string& line) {
    return parse_config("[wrapper]\nname = \"acme\"\nsocket = \"/x.sock\"\n" + line +
                            "\n[delegate]\nname = \"kubernetes\"\ncommand = [\"a\"]\n",
                        "t.toml");
  };
  auto dflt = with("");
  REQUIRE(dflt.ok());
  CHECK(dflt->resync_timeout.count() == 30000);
  CHECK(dflt->to_json()["wrapper"]["resync_timeout_ms"] == 30000);
  auto set = with("resync_timeout_ms = 2500");
  REQUIRE(set.ok());
  CHECK(set->resync_timeout.count() == 2500);
  for (const char* bad : {"resync_timeout_ms = 99", "resync_timeout_ms = 600001"}) {
    auto cfg = with(bad);
    REQUIRE_FALSE(cfg.ok());
    CHECK_THAT(cfg.error(), Catch::Contains("wrapper.resync_timeout_ms: must be between 100 and 600000"));
  }
  auto negative = with("resync_timeout_ms = -1");
  REQUIRE_FALSE(negative.ok());
  CHECK_THAT(negative.error(), Catch::Contains("wrapper.resync_timeout_ms:"));
}

TEST_CASE("[wrapper] durations have ranges; socket paths are absolute and NUL-free", "[config][defects]") {
  auto cfg = parse_config(R"(
[wrapper]
name = "acme"
socket = "run/acme.sock"
shutdown_grace_ms = 18446744073709551
watch_finish_grace_ms = -1
[delegate]
name = "memory"
endpoint = "unix:relative.sock"
)",
                          "t.toml");
  REQUIRE_FALSE(cfg.ok());
  CHECK_THAT(cfg.error(), Catch::Contains("wrapper.socket: \"run/acme.sock\" must be an absolute path"));
  CHECK_THAT(cfg.error(), Catch::Contains("wrapper.shutdown_grace_ms: must be between 0 and 600000"));
  CHECK_THAT(cfg.error(), Catch::Contains("wrapper.watch_finish_grace_ms: must be between 0 and 600000"));
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.endpoint: \"relative.sock\" must be an absolute path"));
}

TEST_CASE("an endpoint equal to the wrapper's own socket is refused", "[config][defects]") {
  auto cfg = parse_config(R"(
[wrapper]
name = "acme"
socket = "/run/openshell/acme.sock"
[delegate]
name = "memory"
endpoint = "unix:///run/openshell/../openshell/acme.sock"
)",
                          "t.toml");
  REQUIRE_FALSE(cfg.ok());
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.endpoint") && Catch::Contains("the wrapper's own socket"));
}

namespace {
std::string delegate_config(const std::string& extra) {
  return "[wrapper]\nname = \"acme\"\nsocket = \"/x.sock\"\n[delegate]\nname = \"kubernetes\"\ncommand = [\"a\"]\n" +
         extra;
}
}  // namespace

TEST_CASE("every [delegate] duration has a range, checked with its key named", "[config]") {
  struct Case {
    std::string toml, error;
  } cases[] = {
      {"ready_timeout_ms = 0", "delegate.ready_timeout_ms: must be between 1 and 3600000"},
      {"ready_timeout_ms = 9223372036854775807", "delegate.ready_timeout_ms: must be between 1 and 3600000"},
      {"stop_grace_ms = 18446744073709551", "delegate.stop_grace_ms: must be between 0 and 600000"},
      {"stop_grace_ms = -1", "delegate.stop_grace_ms: must be between 0 and 600000"},
      {"restart_backoff_initial_ms = 0", "delegate.restart_backoff_initial_ms: must be between 1 and 600000"},
      {"restart_backoff_max_ms = 0", "delegate.restart_backoff_max_ms: must be between 1 and 3600000"},
      {"restart_backoff_max_ms = 4000000", "delegate.restart_backoff_max_ms: must be between 1 and 3600000"},
      {"restart_backoff_initial_ms = 500\nrestart_backoff_max_ms = 100",
       "delegate.restart_backoff_max_ms: must not be below delegate.restart_backoff_initial_ms (500)"},
      {"liveness_interval_ms = 0", "delegate.liveness_interval_ms: must be between 10 and 3600000"},
      {"liveness_timeout_ms = 9999999999", "delegate.liveness_timeout_ms: must be between 10 and 600000"},
      {"liveness_failures = -1", "delegate.liveness_failures: must be between 0 and 100"},
      {"liveness_failures = \"3\"", "delegate.liveness_failures: must be an integer"},
      {"runtime_dir = \"run/here\"", "delegate.runtime_dir: must be an absolute path"},
  };
  for (const auto& c : cases) {
    INFO(c.toml);
    auto cfg = parse_config(delegate_config(c.toml + "\n"), "t.toml");
    REQUIRE_FALSE(cfg.ok());
    CHECK_THAT(cfg.error(), Catch::Contains(c.error));
  }
}

TEST_CASE("[delegate] liveness defaults, limits and zero", "[config]") {
  auto cfg = parse_config(delegate_config(""), "t.toml");
  REQUIRE(cfg.ok());
  CHECK(cfg->delegate.liveness_interval.count() == 10000);
  CHECK(cfg->delegate.liveness_timeout.count() == 5000);
  CHECK(cfg->delegate.liveness_failures == 3);
  CHECK(cfg->to_json()["delegate"]["liveness_failures"] == 3);
  auto edge = parse_config(delegate_config("ready_timeout_ms = 3600000\nstop_grace_ms = 0\n"
                                           "restart_backoff_initial_ms = 600000\nrestart_backoff_max_ms = 600000\n"
                                           "liveness_failures = 0\nruntime_dir = \"/run/x\"\n"),
                           "t.toml");
  REQUIRE(edge.ok());
  CHECK(edge->delegate.stop_grace.count() == 0);
  CHECK(edge->delegate.liveness_failures == 0);
  CHECK(edge->delegate.restart_backoff_max.count() == 600000);
}

#ifndef OWRAP_SOURCE_DIR
#error OWRAP_SOURCE_DIR must name the source tree
#endif

TEST_CASE("every accepted key is documented in docs/configuration.md, and nothing else", "[config][docs]") {
  std::ifstream in(std::string(OWRAP_SOURCE_DIR) + "/docs/configuration.md");
  REQUIRE(in.good());
  // "## `[section]`" headings, then "| `key` | ..." rows until the next heading.
  std::map<std::string, std::set<std::string>> documented;
  std::string section;
  std::regex heading(R"(^## `\[([a-z_]+)\]`)"), row(R"(^\| `([a-z_]+)` \|)");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, heading)) {
      section = m[1];
      documented[section];
    } else if (line.rfind("## ", 0) == 0) {
      section.clear();
    } else if (!section.empty() && std::regex_search(line, m, row)) {
      documented[section].insert(m[1]);
    }
  }
  std::map<std::string, std::set<std::string>> accepted;
  for (const auto& s : config_sections()) accepted[s.name] = {s.keys.begin(), s.keys.end()};
  for (const auto& [name, keys] : accepted) {
    INFO("[" << name << "]");
    REQUIRE(documented.count(name) == 1);
    for (const auto& k : keys) {
      INFO("accepted but not documented: " << name << "." << k);
      CHECK(documented[name].count(k) == 1);
    }
    for (const auto& k : documented[name]) {
      INFO("documented but not accepted: " << name << "." << k);
      CHECK(keys.count(k) == 1);
    }
  }
  for (const auto& [name, keys] : documented) {
    INFO("documented section the parser does not know: [" << name << "]");
    CHECK(accepted.count(name) == 1);
  }
}

TEST_CASE("[delegate] command and env are what execve will see", "[config]") {
  auto cfg = parse_config(R"(
[wrapper]
name = "acme"
socket = "/run/openshell/acme.sock"
[delegate]
name = "memory"
command = ["", "a\u0000b"]
env = { "A=B" = "x", "" = "y", OK = "v\u0000w" }
)",
                          "t.toml");
  REQUIRE_FALSE(cfg.ok());
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.command[0]: must name a program"));
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.command[1]: must not contain a NUL byte"));
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.env: \"A=B\" is not an environment variable name"));
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.env: \"\" is not an environment variable name"));
  CHECK_THAT(cfg.error(), Catch::Contains("delegate.env.OK: must not contain a NUL byte"));
}
