// [[hooks]] parsing: every error names its full key; what docs/hooks.md and
// docs/configuration.md promise is what the parser does.
#include "proxy/config.h"

#include <catch2/catch.hpp>

using namespace owrap;
using Catch::Contains;

namespace {

Result<WrapperConfig> parse_hooks(const std::string& hooks) {
  return parse_config(R"([wrapper]
name = "acme"
socket = "/run/openshell/acme.sock"
hook_budget_ms = 1500
protected_paths = ["/spec/template/labels/acme.com~1owner"]
[delegate]
name = "kubernetes"
endpoint = "unix:///run/k8s.sock"
)" + hooks,
                      "test.toml");
}

}  // namespace

TEST_CASE("[[hooks]] entries resolve with their defaults", "[config][hooks]") {
  auto cfg = parse_hooks(R"(
[[hooks]]
name = "stamp"
type = "exec"
command = ["/usr/lib/hooks/stamp", "--fast"]
phases = ["prepare", "after_create"]
env = { LEVEL = "2" }

[[hooks]]
name = "ipam"
type = "grpc"
socket = "/run/ipam.sock"
phases = ["validate"]
when = { extension = "ipam" }
failure_policy = "fail_open"
mode = "audit"
timeout_ms = 500
may_override = true

[[hooks]]
name = "defaults"
builtin = "defaults"
when = { request_config = true }
[hooks.config]
labels = { tenant = "{labels.team}" }
)");
  REQUIRE(cfg.ok());
  const auto& h = cfg->hooks.hooks;
  REQUIRE(h.size() == 3);
  CHECK(cfg->hooks.budget == std::chrono::milliseconds(1500));
  CHECK(cfg->hooks.protected_paths == std::vector<std::string>{"/spec/template/labels/acme.com~1owner"});
  CHECK(h[0].transport == HookTransport::kExec);
  CHECK(h[0].timeout == std::chrono::milliseconds(2000));
  CHECK(h[0].failure_policy == FailurePolicy::kFailClosed);
  CHECK(h[0].mode == HookMode::kEnforce);
  CHECK(h[0].max_in_flight == 16);
  CHECK(h[0].phases.test(static_cast<size_t>(HookPhase::kAfterCreate)));
  CHECK(h[1].when.kind == Activation::Kind::kExtension);
  CHECK(h[1].when.extension_key == "ipam");
  CHECK(h[1].failure_policy == FailurePolicy::kFailOpen);
  CHECK(h[1].mode == HookMode::kAudit);
  CHECK(h[1].may_override);
  CHECK(h[2].transport == HookTransport::kBuiltin);  // `builtin =` says the type
  CHECK(h[2].when.kind == Activation::Kind::kRequestConfig);
  CHECK(h[2].config_key == "hooks[2].config");
  CHECK(h[2].config.fields().at("labels").struct_value().fields().at("tenant").string_value() == "{labels.team}");
  auto j = cfg->to_json();
  CHECK(j["hooks"][1]["when"]["extension"] == "ipam");
  CHECK(j["hooks"][0]["env"] == nlohmann::json::array({"LEVEL"}));  // names only: values may be credentials
}

TEST_CASE("[[hooks]] mistakes are errors naming the full key", "[config][hooks]") {
  auto err = [](const std::string& hooks) {
    auto cfg = parse_hooks(hooks);
    REQUIRE_FALSE(cfg.ok());
    return cfg.error();
  };
  CHECK_THAT(err("[[hooks]]\ntype = \"exec\"\ncommand = [\"/x\"]\nphases = [\"prepare\"]\n"),
             Contains("hooks[0].name: missing"));
  CHECK_THAT(err("[[hooks]]\nname = \"a/b\"\nbuiltin = \"policy\"\n"), Contains("hooks[0].name: \"a/b\" must match"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\n[[hooks]]\nname = \"a\"\nbuiltin = \"quota\"\n"),
             Contains("hooks[1].name: \"a\" is already the name of an earlier hook"));
  CHECK_THAT(err("[[hooks]]\nname = \"kubernetes\"\nbuiltin = \"policy\"\n"),
             Contains("hooks[0].name: \"kubernetes\" is the delegate's name"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\ntype = \"exec\"\ncommand = [\"x\"]\nphases = [\"prepare\"]\n"),
             Contains("hooks[0].command[0]: must be an absolute path"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\ntype = \"exec\"\ncommand = [\"/x\"]\n"),
             Contains("hooks[0].phases: missing"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\ntype = \"exec\"\ncommand = [\"/x\"]\nphases = [\"before_lunch\"]\n"),
             Contains("hooks[0].phases[0]: unknown phase \"before_lunch\""));
  CHECK_THAT(
      err("[[hooks]]\nname = \"a\"\ntype = \"grpc\"\nsocket = \"/s\"\nphases = [\"validate\"]\ncommand = [\"/x\"]\n"),
      Contains("hooks[0].command: is only for type = \"exec\""));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\nwhen = \"sometimes\"\n"),
             Contains("hooks[0].when: must be"));
  CHECK_THAT(
      err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\nwhen = { extension = \"x\", request_config = true }\n"),
      Contains("hooks[0].when: takes either"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\nfailure_policy = \"ignore\"\n"),
             Contains("hooks[0].failure_policy: must be \"fail_closed\" or \"fail_open\""));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\nmode = \"dry\"\n"),
             Contains("hooks[0].mode: must be"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\ntimeout_ms = 0\n"), Contains("hooks[0].timeout_ms"));
  CHECK_THAT(err("[[hooks]]\nname = \"a\"\nbuiltin = \"policy\"\nbogus = 1\n"), Contains("hooks[0].bogus"));
  CHECK_THAT(err("[hooks]\nname = \"a\"\n"), Contains("hooks: must be an array of tables"));
  auto bad_path = parse_config(
      "[wrapper]\nname = \"acme\"\nsocket = \"/run/a.sock\"\nprotected_paths = [\"spec\"]\n"
      "[delegate]\nname = \"m\"\nendpoint = \"unix:///run/m.sock\"\n",
      "t.toml");
  REQUIRE_FALSE(bad_path.ok());
  CHECK_THAT(bad_path.error(), Contains("wrapper.protected_paths[0]: must be a JSON pointer"));
}
