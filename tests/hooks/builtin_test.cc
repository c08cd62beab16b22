// Builtin hooks invoked directly with HookRequests, as the chain would.
#include "hooks/builtin/builtin_hook.h"
#include "hooks/builtin/builtins.h"
#include "hooks/builtin/quantity.h"
#include "hooks/builtin/template_string.h"
#include "plan/paths.h"
#include "plan/sandbox_json.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

using namespace owrap;
using nlohmann::json;
namespace cpb = openshell::compute::v1;

namespace {

HookSpec spec_for(const std::string& kind, const std::string& config_toml, int index = 0) {
  HookSpec spec;
  spec.name = kind + "-hook";
  spec.builtin = kind;
  spec.config_toml = std::make_shared<toml::table>(toml::parse(config_toml));
  spec.config_key = "hooks[" + std::to_string(index) + "].config";
  return spec;
}

std::unique_ptr<Hook> make_hook(const std::string& kind, const std::string& config_toml, BuiltinContext ctx = {},
                                int index = 0) {
  auto hook = make_builtin(spec_for(kind, config_toml, index), ctx);
  INFO((hook.ok() ? std::string() : hook.error()));
  REQUIRE(hook.ok());
  return std::move(hook.value());
}

std::string config_error_of(const std::string& kind, const std::string& config_toml, int index = 0) {
  auto hook = make_builtin(spec_for(kind, config_toml, index), {});
  REQUIRE_FALSE(hook.ok());
  return hook.error();
}

cpb::DriverSandbox sandbox_from(const std::string& json_text) {
  cpb::DriverSandbox sb;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json_text, &sb).ok());
  return sb;
}

std::shared_ptr<hookpb::HookRequest> request_for(HookPhase phase, const std::string& rpc,
                                                 const cpb::DriverSandbox& sandbox) {
  auto req = std::make_shared<hookpb::HookRequest>();
  req->set_protocol_version(kHookProtocolVersion);
  req->set_phase(std::string(phase_name(phase)));
  req->set_rpc(rpc);
  req->set_sandbox_id(sandbox.id());
  *req->mutable_sandbox() = sandbox;
  return req;
}

// Builtins that answer synchronously call done before invoke() returns.
HookOutcome invoke_sync(Hook& hook, HookPhase phase, const cpb::DriverSandbox& sandbox,
                        const std::string& rpc = "CreateSandbox") {
  std::optional<HookOutcome> outcome;
  InvokeOptions options;
  options.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  hook.invoke(request_for(phase, rpc, sandbox), options, [&](HookOutcome o) { outcome = std::move(o); });
  REQUIRE(outcome.has_value());
  return std::move(*outcome);
}

json value_json(const google::protobuf::Value& v) {
  std::string text;
  REQUIRE(google::protobuf::util::MessageToJsonString(v, &text).ok());
  return json::parse(text);
}

// The patches as the chain gets them: in-process hooks answer JSON
// (HookOutcome::patch_json) or prepared operations (HookOutcome::prepared),
// others protobuf Values.
json patches_json(const HookOutcome& outcome) {
  CHECK_FALSE(outcome.patches_twice());
  if (outcome.prepared) return prepared_to_json(*outcome.prepared);
  if (outcome.patch_json) return *outcome.patch_json;
  json out = json::array();
  for (const auto& op : outcome.response.patches()) {
    out.push_back({{"op", op.op()}, {"path", op.path()}, {"value", value_json(op.value())}});
  }
  return out;
}

// The patches applied as the plan component will: to the JSON view, then
// back to a DriverSandbox (which must still parse).
cpb::DriverSandbox apply(const cpb::DriverSandbox& sandbox, const HookOutcome& outcome) {
  json patched = message_to_json(sandbox).value().patch(patches_json(outcome));
  return sandbox_from(patched.dump());
}

}  // namespace

// ---------------------------------------------------------------- registry

TEST_CASE("builtin registry: kinds, phases, unknown kinds and phases", "[builtin]") {
  CHECK(builtin_kind_list() == "defaults, policy, quota");
  CHECK(phase_list(*builtin_phases("defaults")) == "prepare");
  CHECK(phase_list(*builtin_phases("policy")) == "validate");
  CHECK(phase_list(*builtin_phases("quota")) == "validate");
  CHECK_FALSE(builtin_phases("nope").has_value());

  auto unknown = make_builtin(spec_for("nope", ""), {});
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error() == "unknown builtin \"nope\"; known: defaults, policy, quota");

  auto spec = spec_for("policy", "");
  spec.phases.set(static_cast<size_t>(HookPhase::kAfterCreate));
  auto wrong_phase = make_builtin(spec, {});
  REQUIRE_FALSE(wrong_phase.ok());
  CHECK(wrong_phase.error() == "builtin \"policy\" does not implement after_create (it implements validate)");

  auto hook = make_hook("defaults", "");
  CHECK(hook->transport() == "builtin:defaults");
  CHECK(hook->implemented_phases() == builtin_phases("defaults"));
}

// ---------------------------------------------------------------- defaults

namespace {

// What defaults means, said on the hook protocol's JSON view: each section
// deep-merges its (expanded) values at its pointer, the first missing
// parent getting one add of the whole subtree; an environment variable
// either environment map has is the caller's. The adds it makes, and the
// document after them; nullopt on a missing template variable.
struct Reference {
  std::vector<std::string> paths;
  json doc;
};

std::optional<json> ref_expand(const json& value, const cpb::DriverSandbox& sb) {
  if (value.is_string()) {
    auto s = expand_template(value.get<std::string>(), sb);
    if (!s) return std::nullopt;
    return json(s.value());
  }
  if (!value.is_structured()) return value;
  json out = value.is_object() ? json::object() : json::array();
  for (auto it = value.begin(); it != value.end(); ++it) {
    auto e = ref_expand(*it, sb);
    if (!e) return std::nullopt;
    if (value.is_object())
      out[it.key()] = *e;
    else
      out.push_back(*e);
  }
  return out;
}

bool ref_merge(json& node, const std::string& at, const json& values, const cpb::DriverSandbox& sb, Reference& ref) {
  for (const auto& [k, v] : values.items()) {
    std::string path = at + "/" + escape_token(k);
    if (!node.contains(k)) {
      auto e = ref_expand(v, sb);
      if (!e) return false;
      node[k] = *e;
      ref.paths.push_back(path);
    } else if (node[k].is_object() && v.is_object()) {
      if (!ref_merge(node[k], path, v, sb, ref)) return false;
    }
  }
  return true;
}

bool ref_section(Reference& ref, const std::vector<std::string>& pointer, const json& values,
                 const cpb::DriverSandbox& sb) {
  json* node = &ref.doc;
  std::string at;
  for (size_t i = 0; i < pointer.size(); i++) {
    if (!node->contains(pointer[i])) {
      auto e = ref_expand(values, sb);
      if (!e) return false;
      if (e->empty()) return true;
      for (size_t j = pointer.size(); j-- > i + 1;) *e = json{{pointer[j], *e}};
      (*node)[pointer[i]] = *e;
      ref.paths.push_back(at + "/" + pointer[i]);
      return true;
    }
    at += "/" + pointer[i];
    node = &(*node)[pointer[i]];
  }
  return ref_merge(*node, at, values, sb, ref);
}

std::optional<Reference> reference_defaults(const cpb::DriverSandbox& sb, const json& labels, const json& dc,
                                            const json& env) {
  Reference ref{{}, message_to_json(sb).value()};
  if (!labels.empty() && !ref_section(ref, {"spec", "template", "labels"}, labels, sb)) return std::nullopt;
  if (!dc.empty() && !ref_section(ref, {"spec", "template", "driver_config"}, dc, sb)) return std::nullopt;
  json missing = json::object();
  for (const auto& [k, v] : env.items()) {
    if (!sb.spec().environment().count(k) && !sb.spec().template_().environment().count(k)) missing[k] = v;
  }
  if (!missing.empty() && !ref_section(ref, {"spec", "environment"}, missing, sb)) return std::nullopt;
  return ref;
}

// A random Value of the shapes driver_config defaults meet: objects that
// merge, values that win, members without a kind (no member in the view).
void random_value(google::protobuf::Value& v, std::mt19937& rng, int depth) {
  switch (rng() % (depth > 2 ? 4 : 7)) {
    case 0:
      v.set_string_value("x");
      break;
    case 1:
      v.set_null_value(google::protobuf::NULL_VALUE);
      break;
    case 2:
      v.set_bool_value(true);
      break;
    case 3:
      break;  // no kind
    case 4:
      v.mutable_list_value()->add_values()->set_number_value(1);
      break;
    default: {
      auto& fields = *v.mutable_struct_value()->mutable_fields();
      for (const char* k : {"pod", "node_selector", "pool", "zone", "tolerations", "a/b"}) {
        if (rng() % 3 == 0) random_value(fields[k], rng, depth + 1);
      }
    }
  }
}

}  // namespace

// The hook reads the plan's message, not a JSON view of it: held to the
// JSON view's meaning on random plans (which adds, at which paths, and the
// document after them), templates and missing variables included.
TEST_CASE("defaults: the message walk makes the adds the JSON view means", "[builtin][defaults]") {
  const char* config = R"(
    labels = { tenant = "{labels.team}", "sandbox-ref" = "{sandbox.namespace}/{sandbox.name}", "a/b" = "~" }
    environment = { SANDBOX_IMAGE = "{template.image}", HTTP_PROXY = "http://proxy", A = "{{lit}}" }
    [driver_config.pod]
    node_selector = { pool = "sandboxes", "a/b" = { zone = "z" } }
    tolerations = [ { key = "sandbox" } ]
    runtime = "{labels.team}"
  )";
  auto hook = make_hook("defaults", config);
  const json labels = {
      {"tenant", "{labels.team}"}, {"sandbox-ref", "{sandbox.namespace}/{sandbox.name}"}, {"a/b", "~"}};
  const json env = {{"SANDBOX_IMAGE", "{template.image}"}, {"HTTP_PROXY", "http://proxy"}, {"A", "{{lit}}"}};
  const json dc = {{"pod",
                    {{"node_selector", {{"pool", "sandboxes"}, {"a/b", {{"zone", "z"}}}}},
                     {"tolerations", json::array({{{"key", "sandbox"}}})},
                     {"runtime", "{labels.team}"}}}};
  std::mt19937 rng(47);
  int failed = 0, added = 0;
  for (int round = 0; round < 3000; round++) {
    cpb::DriverSandbox sb;
    sb.set_id("sb-" + std::to_string(round));
    if (rng() % 4) sb.set_name("n");
    if (rng() % 4) sb.set_namespace_("ns");
    if (rng() % 6) {
      auto* spec = sb.mutable_spec();
      for (const char* k : {"A", "HTTP_PROXY"}) {
        if (rng() % 3 == 0) (*spec->mutable_environment())[k] = "caller";
      }
      if (rng() % 4) {
        auto* tmpl = spec->mutable_template_();
        if (rng() % 2) tmpl->set_image("busybox");
        if (rng() % 5) (*tmpl->mutable_labels())["team"] = "blue";
        for (const char* k : {"tenant", "a/b"}) {
          if (rng() % 3 == 0) (*tmpl->mutable_labels())[k] = "caller";
        }
        for (const char* k : {"SANDBOX_IMAGE", "A"}) {
          if (rng() % 4 == 0) (*tmpl->mutable_environment())[k] = "caller";
        }
        if (rng() % 3) {
          auto& fields = *tmpl->mutable_driver_config()->mutable_fields();  // maybe present and empty
          if (rng() % 3) random_value(fields["pod"], rng, 0);
        }
      }
    }
    auto want = reference_defaults(sb, labels, dc, env);
    auto outcome = invoke_sync(*hook, HookPhase::kPrepare, sb);
    INFO("sandbox " << message_to_json(sb).value().dump());
    REQUIRE(outcome.failure.ok() == want.has_value());
    if (!want) {
      CHECK(outcome.failure.error_message().find("is not set on this sandbox") != std::string::npos);
      failed++;
      continue;
    }
    const json patches = patches_json(outcome);
    std::vector<std::string> paths;
    for (const auto& op : patches) paths.push_back(op.at("path"));
    CHECK(paths == want->paths);
    CHECK(message_to_json(sb).value().patch(patches) == want->doc);
    added += static_cast<int>(paths.size());
  }
  CHECK(failed > 100);  // both outcomes were reached
  CHECK(added > 2000);
}

TEST_CASE("defaults: adds only missing values, with templates, creating parents", "[builtin][defaults]") {
  auto hook = make_hook("defaults", R"(
    labels = { owner = "{labels.team}", keep = "default", ref = "{sandbox.id}-{{lit}}", "app.kubernetes.io/part-of" = "openshell", brace = "a}}b" }
    environment = { FOO = "{sandbox.name}@{sandbox.namespace}", BAR = "default", IMG = "{template.image}" }
    driver_config = { pod = { node_selector = { pool = "sandboxes" }, runtime_class_name = "gvisor" } }
  )");
  auto sb = sandbox_from(R"({"id": "sb-1", "name": "n1", "namespace": "ns", "spec": {"template": {
      "image": "ghcr.io/acme/img:1", "labels": {"team": "blue", "keep": "caller"},
      "environment": {"BAR": "caller"}}}})");
  auto outcome = invoke_sync(*hook, HookPhase::kPrepare, sb);
  REQUIRE(outcome.failure.ok());
  CHECK(outcome.response.allowed());
  CHECK(patches_json(outcome) == json::parse(R"([
    {"op": "add", "path": "/spec/template/labels/app.kubernetes.io~1part-of", "value": "openshell"},
    {"op": "add", "path": "/spec/template/labels/brace", "value": "a}b"},
    {"op": "add", "path": "/spec/template/labels/owner", "value": "blue"},
    {"op": "add", "path": "/spec/template/labels/ref", "value": "sb-1-{lit}"},
    {"op": "add", "path": "/spec/template/driver_config",
     "value": {"pod": {"node_selector": {"pool": "sandboxes"}, "runtime_class_name": "gvisor"}}},
    {"op": "add", "path": "/spec/environment", "value": {"FOO": "n1@ns", "IMG": "ghcr.io/acme/img:1"}}
  ])"));
  auto result = apply(sb, outcome);
  CHECK(result.spec().template_().labels().at("keep") == "caller");
  CHECK(result.spec().template_().labels().at("owner") == "blue");
  CHECK(result.spec().environment().at("FOO") == "n1@ns");
  CHECK(result.spec().environment().count("BAR") == 0);  // the template's BAR is the caller's
}

TEST_CASE("defaults: the worked example of docs/hooks.md", "[builtin][defaults]") {
  auto hook = make_hook("defaults", R"(
    labels = { tenant = "{labels.team}", "sandbox-ref" = "{sandbox.namespace}/{sandbox.name}" }
    environment = { SANDBOX_IMAGE = "{template.image}", HTTP_PROXY = "http://proxy.internal:3128" }
    [driver_config.pod]
    node_selector = { pool = "sandboxes" }
    tolerations = [ { key = "sandbox", operator = "Exists", effect = "NoSchedule" } ]
  )");
  auto sb = sandbox_from(R"({"id": "7f3c", "name": "dev", "namespace": "team-a", "spec": {"template": {
      "image": "ghcr.io/acme/agent:1", "labels": {"team": "blue"},
      "driver_config": {"pod": {"node_selector": {"pool": "gpu"}}}}}})");
  auto outcome = invoke_sync(*hook, HookPhase::kPrepare, sb);
  REQUIRE(outcome.failure.ok());
  CHECK(patches_json(outcome) == json::parse(R"([
    {"op": "add", "path": "/spec/template/labels/sandbox-ref", "value": "team-a/dev"},
    {"op": "add", "path": "/spec/template/labels/tenant", "value": "blue"},
    {"op": "add", "path": "/spec/template/driver_config/pod/tolerations",
     "value": [{"effect": "NoSchedule", "key": "sandbox", "operator": "Exists"}]},
    {"op": "add", "path": "/spec/environment",
     "value": {"HTTP_PROXY": "http://proxy.internal:3128", "SANDBOX_IMAGE": "ghcr.io/acme/agent:1"}}
  ])"));
}

TEST_CASE("defaults: deep-merges driver_config without overwriting the caller", "[builtin][defaults]") {
  auto hook = make_hook("defaults", R"(
    [driver_config.pod]
    node_selector = { pool = "sandboxes", zone = "a" }
    tolerations = [ { key = "sandbox", operator = "Exists" } ]
    priority_class_name = "low"
  )");
  auto sb = sandbox_from(R"({"id": "sb-2", "spec": {"template": {"driver_config":
      {"pod": {"node_selector": {"pool": "gpu"}, "priority_class_name": "high"}}}}})");
  auto outcome = invoke_sync(*hook, HookPhase::kPrepare, sb);
  REQUIRE(outcome.failure.ok());
  CHECK(patches_json(outcome) == json::parse(R"([
    {"op": "add", "path": "/spec/template/driver_config/pod/node_selector/zone", "value": "a"},
    {"op": "add", "path": "/spec/template/driver_config/pod/tolerations", "value": [{"key": "sandbox", "operator": "Exists"}]}
  ])"));
  auto result = apply(sb, outcome);
  json dc = message_to_json(result).value()["spec"]["template"]["driver_config"];
  CHECK(dc["pod"]["node_selector"] == json({{"pool", "gpu"}, {"zone", "a"}}));
  CHECK(dc["pod"]["priority_class_name"] == "high");
}

TEST_CASE("defaults: a sandbox without spec gets one add per section, parents created", "[builtin][defaults]") {
  auto hook = make_hook("defaults", R"(
    labels = { sandbox = "{sandbox.id}" }
    driver_config = { pod = { runtime_class_name = "gvisor" } }
  )");
  auto sb = sandbox_from(R"({"id": "sb-3"})");
  auto outcome = invoke_sync(*hook, HookPhase::kPrepare, sb);
  REQUIRE(outcome.failure.ok());
  CHECK(patches_json(outcome) == json::parse(R"([
    {"op": "add", "path": "/spec", "value": {"template": {"labels": {"sandbox": "sb-3"}}}},
    {"op": "add", "path": "/spec/template/driver_config", "value": {"pod": {"runtime_class_name": "gvisor"}}}
  ])"));
  auto result = apply(sb, outcome);
  CHECK(result.spec().template_().labels().at("sandbox") == "sb-3");

  // Nothing missing: nothing to add; other phases are not its business.
  CHECK(invoke_sync(*hook, HookPhase::kPrepare, result).patch_count() == 0);
  auto other = invoke_sync(*hook, HookPhase::kValidate, sb);
  CHECK(other.response.allowed());
  CHECK(other.patch_count() == 0);
}

TEST_CASE("defaults: a missing template variable fails the call naming variable and key", "[builtin][defaults]") {
  auto hook = make_hook("defaults", R"(
    labels = { tenant = "{labels.team}" }
    driver_config = { pod = { node_selector = { pool = "{labels.pool}" } } }
  )",
                        {}, 0);
  auto no_team = sandbox_from(R"({"id": "sb-4", "spec": {"template": {"labels": {"pool": "p"}}}})");
  auto outcome = invoke_sync(*hook, HookPhase::kPrepare, no_team);
  CHECK(outcome.failure.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(outcome.failure.error_message() ==
        "hooks[0].config.labels.tenant: template variable {labels.team} is not set on this sandbox");

  // An empty value is as good as missing: never an empty string.
  auto empty_pool = sandbox_from(R"({"id": "sb-4", "spec": {"template": {"labels": {"team": "t", "pool": ""}}}})");
  outcome = invoke_sync(*hook, HookPhase::kPrepare, empty_pool);
  CHECK(outcome.failure.error_message() ==
        "hooks[0].config.driver_config.pod.node_selector.pool: template variable {labels.pool} is not set on this "
        "sandbox");

  // A default the caller already set is never expanded, so it cannot fail.
  auto has_tenant = sandbox_from(
      R"({"id": "sb-4", "spec": {"template": {"labels": {"tenant": "t", "pool": "p"}, "driver_config": {}}}})");
  outcome = invoke_sync(*hook, HookPhase::kPrepare, has_tenant);
  REQUIRE(outcome.failure.ok());
  CHECK(patches_json(outcome) == json::parse(R"([
    {"op": "add", "path": "/spec/template/driver_config/pod", "value": {"node_selector": {"pool": "p"}}}
  ])"));
}

TEST_CASE("defaults: configuration errors at start name the full key", "[builtin][defaults]") {
  CHECK(config_error_of("defaults", R"(labels = { "openshell.ai/managed-by" = "me" })", 2) ==
        "hooks[2].config.labels.openshell.ai/managed-by: labels starting with openshell. are driver-owned; a hook "
        "may not set them");
  CHECK(config_error_of("defaults", R"(environment = { OPENSHELL_ENDPOINT = "x" })") ==
        "hooks[0].config.environment.OPENSHELL_ENDPOINT: environment variables starting with OPENSHELL_ are "
        "driver-owned; a hook may not set them");
  CHECK(config_error_of("defaults", "colour = 1") == "hooks[0].config.colour: unknown key");
  CHECK(config_error_of("defaults", R"(labels = { x = "{sandbox.uid}" })") ==
        "hooks[0].config.labels.x: unknown template variable {sandbox.uid} (known: {sandbox.id}, {sandbox.name}, "
        "{sandbox.namespace}, {template.image}, {labels.<key>})");
  CHECK(config_error_of("defaults", R"(labels = { x = "{labels.}" })").find("unknown template variable {labels.}") !=
        std::string::npos);
  CHECK(config_error_of("defaults", R"(environment = { X = "a{labels.b" })") ==
        "hooks[0].config.environment.X: unterminated \"{\" at offset 1 (write \"{{\" for a literal brace)");
  CHECK(config_error_of("defaults", R"(environment = { X = "a}b" })") ==
        "hooks[0].config.environment.X: unmatched \"}\" at offset 1 (write \"}}\" for a literal brace)");
  CHECK(config_error_of("defaults", R"(driver_config = { pod = { tolerations = [ { key = "{nope}" } ] } })") ==
        "hooks[0].config.driver_config.pod.tolerations[0].key: unknown template variable {nope} (known: "
        "{sandbox.id}, {sandbox.name}, {sandbox.namespace}, {template.image}, {labels.<key>})");
  CHECK(config_error_of("defaults", "driver_config = { at = 1979-05-27 }") ==
        "hooks[0].config.driver_config.at: dates and times are not supported (use a string)");
  CHECK(config_error_of("defaults", "driver_config = 3") ==
        "hooks[0].config.driver_config: must be a table (the base driver's block)");
  CHECK(config_error_of("defaults", "labels = { a = 1 }") == "hooks[0].config.labels.a: must be a string");
  // Every error at once, one per line.
  CHECK(config_error_of("defaults", "a = 1\nb = 2") ==
        "hooks[0].config.a: unknown key\nhooks[0].config.b: unknown key");
}

// ---------------------------------------------------------------- quantities

TEST_CASE("quantities parse exactly", "[builtin][quantity]") {
  auto q = [](const char* text) {
    auto r = parse_quantity(text);
    INFO(text << ": " << (r.ok() ? std::string() : r.error()));
    REQUIRE(r.ok());
    return r.value();
  };
  CHECK(q("500m") < q("1"));
  CHECK(q("1") == q("1000m"));
  CHECK(q("0.5") == q("500m"));
  CHECK(q(".5") == q("500m"));
  CHECK(q("1Gi") == q("1024Mi"));
  CHECK(q("1Mi") == q("1024Ki"));
  CHECK(q("1.5Gi") == q("1536Mi"));
  CHECK(q("1G") == q("1000M"));
  CHECK(q("1G") < q("1Gi"));
  CHECK(q("1k") == q("1000"));
  CHECK(q("1e3") == q("1k"));
  CHECK(q("1E3") == q("1k"));
  CHECK(q("2e-3") == q("2m"));
  CHECK(q("1E") == q("1000P"));
  CHECK(q("1Ei") == q("1024Pi"));
  CHECK(q("+2") == q("2"));
  CHECK(q("100u") == q("100000n"));
  CHECK(q("1n").nanos == 1);
  CHECK(q("0.1n").nanos == 1);  // below Kubernetes' precision rounds up
  CHECK(q("0").nanos == 0);
  CHECK(q("2.0001") > q("2"));
  CHECK(q("4Gi").nanos == (unsigned __int128)4 * 1024 * 1024 * 1024 * 1000000000ULL);

  for (const char* bad :
       {"", "abc", "Gi", "1.2.3", "1GB", "1 Gi", " 1", "1K", "1ki", ".", "1e", "1ee3", "1e3.5", "0x10", "1Gi ", "m"}) {
    auto r = parse_quantity(bad);
    INFO("\"" << bad << "\"");
    CHECK_FALSE(r.ok());
    if (!r.ok()) CHECK(r.error().find("is not a Kubernetes quantity") != std::string::npos);
  }
  CHECK(parse_quantity("-1").error() == "\"-1\" must not be negative");
  CHECK(parse_quantity("999999999999999999999999999999Ei").error() ==
        "\"999999999999999999999999999999Ei\" is too large");
  CHECK(parse_quantity("1234567890123456789012345678901").error().find("too many digits") != std::string::npos);
}

// ---------------------------------------------------------------- policy

namespace {

const char* kPolicyConfig = R"(
  images.allowed_prefixes = ["ghcr.io/acme/"]
  images.allowed_patterns = ["docker.io/library/python:3.*"]
  labels.required = ["team", "cost-center"]
  [resources]
  max_cpu_limit = "2"
  max_cpu_request = "1500m"
  max_memory_limit = "4Gi"
  max_memory_request = "2Gi"
  max_gpu_count = 1
)";

cpb::DriverSandbox compliant() {
  return sandbox_from(R"({"id": "sb", "spec": {"template": {"image": "ghcr.io/acme/agent:1",
      "labels": {"team": "a", "cost-center": "42"},
      "resources": {"cpu_limit": "2", "cpu_request": "1500m", "memory_limit": "4096Mi", "memory_request": "2Gi"}},
      "resource_requirements": {"gpu": {"count": 1}}}})");
}

std::string denial(Hook& hook, const cpb::DriverSandbox& sb, const std::string& code = "FAILED_PRECONDITION") {
  auto outcome = invoke_sync(hook, HookPhase::kValidate, sb);
  REQUIRE(outcome.failure.ok());
  REQUIRE_FALSE(outcome.response.allowed());
  CHECK(outcome.response.status_code() == code);
  return outcome.response.reason();
}

}  // namespace

TEST_CASE("policy: a compliant sandbox is allowed", "[builtin][policy]") {
  auto hook = make_hook("policy", kPolicyConfig, {}, 1);
  auto outcome = invoke_sync(*hook, HookPhase::kValidate, compliant());
  REQUIRE(outcome.failure.ok());
  CHECK(outcome.response.allowed());

  auto python = compliant();
  python.mutable_spec()->mutable_template_()->set_image("docker.io/library/python:3.12");
  CHECK(invoke_sync(*hook, HookPhase::kValidate, python).response.allowed());

  // Unset resources are the base driver's defaults: not judged.
  auto bare = compliant();
  bare.mutable_spec()->mutable_template_()->clear_resources();
  bare.mutable_spec()->clear_resource_requirements();
  CHECK(invoke_sync(*hook, HookPhase::kValidate, bare).response.allowed());

  // No rules, nothing denied; other phases are not its business.
  auto empty = make_hook("policy", "");
  CHECK(invoke_sync(*empty, HookPhase::kValidate, sandbox_from("{}")).response.allowed());
  CHECK(invoke_sync(*hook, HookPhase::kPrepare, sandbox_from("{}")).response.allowed());
}

TEST_CASE("policy: every denial names its rule", "[builtin][policy]") {
  auto prefixes_only = make_hook("policy", R"(images.allowed_prefixes = ["ghcr.io/acme/"])");
  auto sb = compliant();
  sb.mutable_spec()->mutable_template_()->set_image("docker.io/x:1");
  CHECK(denial(*prefixes_only, sb) ==
        "rule images.allowed_prefixes: image \"docker.io/x:1\" is not under any allowed prefix (ghcr.io/acme/)");

  auto patterns_only = make_hook("policy", R"(images.allowed_patterns = ["ghcr.io/*/tools:*", "quay.io/a?c/*"])");
  CHECK(invoke_sync(*patterns_only, HookPhase::kValidate,
                    [] {
                      auto s = compliant();
                      s.mutable_spec()->mutable_template_()->set_image("ghcr.io/acme/team/tools:7");
                      return s;
                    }())
            .response.allowed());
  CHECK(denial(*patterns_only, sb) ==
        "rule images.allowed_patterns: image \"docker.io/x:1\" matches no allowed pattern (ghcr.io/*/tools:*, "
        "quay.io/a?c/*)");

  auto hook = make_hook("policy", kPolicyConfig, {}, 1);
  CHECK(denial(*hook, sb) ==
        "rule images.allowed_prefixes, images.allowed_patterns: image \"docker.io/x:1\" is not under any allowed "
        "prefix (ghcr.io/acme/) and matches no allowed pattern (docker.io/library/python:3.*)");
  auto no_image = compliant();
  no_image.mutable_spec()->mutable_template_()->clear_image();
  CHECK(denial(*prefixes_only, no_image) ==
        "rule images.allowed_prefixes: image \"\" is not under any allowed prefix (ghcr.io/acme/)");

  auto unlabelled = compliant();
  unlabelled.mutable_spec()->mutable_template_()->mutable_labels()->erase("cost-center");
  CHECK(denial(*hook, unlabelled) == "rule labels.required: missing label cost-center");
  (*unlabelled.mutable_spec()->mutable_template_()->mutable_labels())["team"] = "";
  CHECK(denial(*hook, unlabelled) == "rule labels.required: missing labels team, cost-center");

  struct Case {
    const char* field;
    const char* value;
    const char* reason;
  };
  for (const auto& c : std::vector<Case>{
           {"cpu_limit", "2001m", "rule resources.max_cpu_limit: template.resources.cpu_limit \"2001m\" exceeds 2"},
           {"cpu_request", "2", "rule resources.max_cpu_request: template.resources.cpu_request \"2\" exceeds 1500m"},
           {"memory_limit", "4097Mi",
            "rule resources.max_memory_limit: template.resources.memory_limit \"4097Mi\" exceeds 4Gi"},
           {"memory_request", "3G",
            "rule resources.max_memory_request: template.resources.memory_request \"3G\" exceeds 2Gi"},
       }) {
    auto s = compliant();
    auto* r = s.mutable_spec()->mutable_template_()->mutable_resources();
    auto* field = r->GetDescriptor()->FindFieldByName(c.field);
    r->GetReflection()->SetString(r, field, c.value);
    INFO(c.field);
    CHECK(denial(*hook, s) == c.reason);
  }

  auto gpus = compliant();
  gpus.mutable_spec()->mutable_resource_requirements()->mutable_gpu()->set_count(2);
  CHECK(denial(*hook, gpus) == "rule resources.max_gpu_count: 2 GPUs requested, at most 1 allowed");

  auto bad_quantity = compliant();
  bad_quantity.mutable_spec()->mutable_template_()->mutable_resources()->set_memory_limit("4 GB");
  CHECK(denial(*hook, bad_quantity, "INVALID_ARGUMENT") ==
        "rule resources.max_memory_limit: template.resources.memory_limit: \"4 GB\" is not a Kubernetes quantity (a "
        "number with an optional suffix: m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3)");
}

TEST_CASE("policy: several violations are all reported, in rule order", "[builtin][policy]") {
  auto hook = make_hook("policy", kPolicyConfig, {}, 1);
  auto sb = compliant();
  sb.mutable_spec()->mutable_template_()->set_image("evil.io/x");
  sb.mutable_spec()->mutable_template_()->mutable_labels()->clear();
  sb.mutable_spec()->mutable_template_()->mutable_resources()->set_cpu_limit("8");
  CHECK(denial(*hook, sb) ==
        "rule images.allowed_prefixes, images.allowed_patterns: image \"evil.io/x\" is not under any allowed prefix "
        "(ghcr.io/acme/) and matches no allowed pattern (docker.io/library/python:3.*); rule labels.required: "
        "missing labels team, cost-center; rule resources.max_cpu_limit: template.resources.cpu_limit \"8\" exceeds "
        "2");
}

TEST_CASE("policy: configuration errors at start name the full key", "[builtin][policy]") {
  CHECK(config_error_of("policy", R"(resources.max_memory_limit = "4GB")", 1) ==
        "hooks[1].config.resources.max_memory_limit: \"4GB\" is not a Kubernetes quantity (a number with an optional "
        "suffix: m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3)");
  CHECK(config_error_of("policy", R"(resources.max_cpu_limit = 2)") ==
        "hooks[0].config.resources.max_cpu_limit: must be a string");
  CHECK(config_error_of("policy", R"(images.allowed = ["x"])") == "hooks[0].config.images.allowed: unknown key");
  CHECK(config_error_of("policy", R"(images.allowed_prefixes = [])") ==
        "hooks[0].config.images.allowed_prefixes: must not be empty (leave it out to allow every image)");
  CHECK(config_error_of("policy", R"(labels.required = "team")") ==
        "hooks[0].config.labels.required: must be an array of strings");
  CHECK(config_error_of("policy", R"(resources.max_gpu_count = -1)") ==
        "hooks[0].config.resources.max_gpu_count: must be between 0 and 1048576");
  CHECK(config_error_of("policy", "image = 1") == "hooks[0].config.image: unknown key");
}

// ---------------------------------------------------------------- quota

namespace {

// The delegate's ListSandboxes as BuiltinContext sees it: each list takes
// its snapshot when called and answers later, from a thread of its own.
class FakeDelegate {
 public:
  FakeDelegate() : worker_([this] { run(); }) {}
  ~FakeDelegate() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      for (auto& h : held_) queue_.push_back(std::move(h));
      held_.clear();
    }
    cv_.notify_all();
    worker_.join();
  }

  BuiltinContext context() {
    BuiltinContext ctx;
    ctx.wrapper_name = "acme";
    ctx.list_sandboxes = [this](std::chrono::steady_clock::time_point, BuiltinContext::ListDone done) {
      list(std::move(done));
    };
    return ctx;
  }

  void add(const std::string& id, const std::string& tenant, bool deleting = false) {
    std::lock_guard lock(mu_);
    cpb::DriverSandbox sb;
    sb.set_id(id);
    if (!tenant.empty()) (*sb.mutable_spec()->mutable_template_()->mutable_labels())["tenant"] = tenant;
    sb.mutable_status()->set_deleting(deleting);
    store_[id] = sb;
  }
  void remove(const std::string& id) {
    std::lock_guard lock(mu_);
    store_.erase(id);
  }
  void set_max_delay_ms(int ms) { max_delay_ms_ = ms; }
  void set_failing(bool failing) { failing_ = failing; }
  // Held lists wait for release_held().
  void set_holding(bool holding) {
    std::lock_guard lock(mu_);
    holding_ = holding;
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  void release_held() {
    {
      std::lock_guard lock(mu_);
      for (auto& h : held_) queue_.push_back(std::move(h));
      held_.clear();
    }
    cv_.notify_all();
  }
  int lists() const { return lists_; }

 private:
  struct Pending {
    std::chrono::steady_clock::time_point due;
    grpc::Status status;
    std::vector<cpb::DriverSandbox> snapshot;
    BuiltinContext::ListDone done;
  };

  void list(BuiltinContext::ListDone done) {
    lists_++;
    std::lock_guard lock(mu_);
    Pending p;
    p.due = std::chrono::steady_clock::now() +
            std::chrono::microseconds(max_delay_ms_ * 1000 > 0 ? rng_() % (max_delay_ms_ * 1000) : 0);
    if (failing_) {
      p.status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "delegate down");
    } else {
      for (const auto& [_, sb] : store_) p.snapshot.push_back(sb);
    }
    p.done = std::move(done);
    (holding_ ? held_ : queue_).push_back(std::move(p));
    cv_.notify_all();
  }

  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      // Answers in due order, so lists overtake each other.
      auto next = std::min_element(queue_.begin(), queue_.end(),
                                   [](const Pending& a, const Pending& b) { return a.due < b.due; });
      if (!stopping_ && next->due > std::chrono::steady_clock::now()) {
        cv_.wait_until(lock, next->due);
        continue;
      }
      Pending p = std::move(*next);
      queue_.erase(next);
      lock.unlock();
      p.done(p.status, std::move(p.snapshot));
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, cpb::DriverSandbox> store_;
  std::deque<Pending> queue_;
  std::deque<Pending> held_;
  bool holding_ = false;
  bool stopping_ = false;
  std::atomic<int> max_delay_ms_{0};
  std::atomic<bool> failing_{false};
  std::atomic<int> lists_{0};
  std::mt19937 rng_{42};
  std::thread worker_;
};

// One invocation's outcome, waited for.
class Waiter {
 public:
  HookDone done() {
    // Runs on the hook's thread: no Catch2 assertion there (not thread-safe);
    // a second answer is counted and checked by wait().
    return [this](HookOutcome o) {
      std::lock_guard lock(mu_);
      if (outcome_.has_value()) {
        answers_again_++;
        return;
      }
      outcome_ = std::move(o);
      cv_.notify_all();
    };
  }
  HookOutcome wait() {
    std::unique_lock lock(mu_);
    REQUIRE(cv_.wait_for(lock, std::chrono::seconds(5), [&] { return outcome_.has_value(); }));
    CHECK(answers_again_ == 0);
    return *outcome_;
  }
  bool ready() {
    std::lock_guard lock(mu_);
    return outcome_.has_value();
  }

 private:
  int answers_again_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<HookOutcome> outcome_;
};

cpb::DriverSandbox tenant_sandbox(const std::string& id, const std::string& tenant) {
  cpb::DriverSandbox sb;
  sb.set_id(id);
  if (!tenant.empty()) (*sb.mutable_spec()->mutable_template_()->mutable_labels())["tenant"] = tenant;
  return sb;
}

void start_validate(Hook& hook, const std::string& id, const std::string& tenant, Waiter& waiter,
                    const std::string& rpc = "CreateSandbox", std::shared_ptr<CancelSignal> cancel = nullptr) {
  InvokeOptions options;
  options.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  if (cancel) options.cancel = cancel;
  hook.invoke(request_for(HookPhase::kValidate, rpc, tenant_sandbox(id, tenant)), options, waiter.done());
}

HookOutcome validate(Hook& hook, const std::string& id, const std::string& tenant,
                     const std::string& rpc = "CreateSandbox") {
  Waiter waiter;
  start_validate(hook, id, tenant, waiter, rpc);
  return waiter.wait();
}

void check_denied(const HookOutcome& outcome, const std::string& reason) {
  REQUIRE(outcome.failure.ok());
  CHECK_FALSE(outcome.response.allowed());
  CHECK(outcome.response.status_code() == "RESOURCE_EXHAUSTED");
  CHECK(outcome.response.reason() == reason);
}

void check_allowed(const HookOutcome& outcome) {
  INFO(outcome.failure.error_message() << " / " << outcome.response.reason());
  REQUIRE(outcome.failure.ok());
  CHECK(outcome.response.allowed());
}

}  // namespace

TEST_CASE("quota: the limit reached denies with RESOURCE_EXHAUSTED and numbers", "[builtin][quota]") {
  FakeDelegate delegate;
  delegate.add("a1", "acme");
  delegate.add("a2", "acme");
  delegate.add("a3", "acme");
  delegate.add("gone", "acme", /*deleting=*/true);
  delegate.add("o1", "other");
  delegate.add("u1", "");
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 3
    overrides = { big = 5 })",
                        delegate.context());
  CHECK(hook->transport() == "builtin:quota");
  check_denied(validate(*hook, "new", "acme"), "quota tenant=acme: 3 of 3 sandboxes in use");
  check_allowed(validate(*hook, "new-other", "other"));
  check_allowed(validate(*hook, "new-big", "big"));
  // Without the label the sandbox is neither counted nor limited.
  check_allowed(validate(*hook, "new-unlabelled", ""));

  auto overridden = make_hook("quota", R"(label = "tenant"
    max = 1
    overrides = { acme = 4 })",
                              delegate.context());
  check_allowed(validate(*overridden, "n1", "acme"));
  check_denied(validate(*overridden, "n2", "other"), "quota tenant=other: 1 of 1 sandboxes in use");
  check_denied(validate(*overridden, "n3", "acme"), "quota tenant=acme: 4 of 4 sandboxes in use");

  auto counting_missing = make_hook("quota", R"(label = "tenant"
    max = 1
    count_missing_label = true)",
                                    delegate.context());
  check_denied(validate(*counting_missing, "n4", ""), "quota tenant=(unlabelled): 1 of 1 sandboxes in use");

  auto requiring = make_hook("quota", R"(label = "tenant"
    max = 9
    require_label = true)",
                             delegate.context());
  auto refused = validate(*requiring, "n5", "");
  CHECK_FALSE(refused.response.allowed());
  CHECK(refused.response.status_code() == "FAILED_PRECONDITION");
  CHECK(refused.response.reason() == "quota tenant: the sandbox has no label \"tenant\"");
}

namespace {

// 50 CreateSandbox validations for tenant "acme" from 5 threads, as calls
// would run them: an allowed one reaches the delegate (`before_finish`, for
// the i-th create of a thread), the call ends with call_finished, then
// `after_finish`. Catch2 assertions are for the test thread: workers only
// count.
struct CreateBurst {
  int allowed = 0, denied = 0, wrong_code = 0;
};
using Committed = std::function<void(const std::string& id, int i)>;
CreateBurst concurrent_creates(Hook& hook, const Committed& before_finish, const Committed& after_finish) {
  std::atomic<int> allowed{0}, denied{0}, finished{0}, wrong_code{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> threads;
  for (int t = 0; t < 5; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; i++) {
        std::string id = "sb-" + std::to_string(t) + "-" + std::to_string(i);
        InvokeOptions options;
        options.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        hook.invoke(request_for(HookPhase::kValidate, "CreateSandbox", tenant_sandbox(id, "acme")), options,
                    [&, id, i](HookOutcome o) {
                      bool ok = o.failure.ok() && o.response.allowed();
                      if (ok) {
                        allowed++;
                        before_finish(id, i);
                      } else {
                        if (o.response.status_code() != "RESOURCE_EXHAUSTED") wrong_code++;
                        denied++;
                      }
                      hook.call_finished(id, ok);
                      if (ok) after_finish(id, i);
                      std::lock_guard lock(mu);
                      finished++;
                      cv.notify_all();
                    });
        std::this_thread::sleep_for(std::chrono::microseconds(200 * (i % 3)));
      }
    });
  }
  for (auto& th : threads) th.join();
  std::unique_lock lock(mu);
  REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return finished == 50; }));
  return CreateBurst{allowed, denied, wrong_code};
}

}  // namespace

TEST_CASE("quota: 50 concurrent creates for one tenant, max 10: exactly 10 allowed", "[builtin][quota]") {
  FakeDelegate delegate;
  delegate.set_max_delay_ms(5);
  delegate.add("other-1", "other");
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 10)",
                        delegate.context());
  // An allowed create reaches the delegate, which commits it.
  auto burst = concurrent_creates(
      *hook, [&](const std::string& id, int) { delegate.add(id, "acme"); }, [](const std::string&, int) {});
  CHECK(burst.allowed == 10);
  CHECK(burst.wrong_code == 0);
  CHECK(burst.denied == 40);
  CHECK(delegate.lists() == 50);
  // The committed ten are in the delegate's list now: still full.
  check_denied(validate(*hook, "late", "acme"), "quota tenant=acme: 10 of 10 sandboxes in use");
  check_allowed(validate(*hook, "other-2", "other"));
}

TEST_CASE("quota: reservations are dropped when the call finishes", "[builtin][quota]") {
  FakeDelegate delegate;
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 1)",
                        delegate.context());
  check_allowed(validate(*hook, "a", "acme"));
  check_denied(validate(*hook, "b", "acme"), "quota tenant=acme: 1 of 1 sandboxes in use");
  hook->call_finished("b", false);
  check_denied(validate(*hook, "c", "acme"), "quota tenant=acme: 1 of 1 sandboxes in use");
  hook->call_finished("c", false);
  hook->call_finished("a", false);  // a's create failed: its place is free
  check_allowed(validate(*hook, "d", "acme"));
  CHECK(hook->describe()["reserved"] == 1);
}

TEST_CASE("quota: a create committed after a list began is counted though the list lacks it", "[builtin][quota]") {
  FakeDelegate delegate;
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 1)",
                        delegate.context());
  check_allowed(validate(*hook, "a", "acme"));  // a reserves

  delegate.set_holding(true);
  Waiter b;
  start_validate(*hook, "b", "acme", b);  // b's list is taken now: without a
  REQUIRE(delegate.held() == 1);
  delegate.add("a", "acme");       // the delegate commits a ...
  hook->call_finished("a", true);  // ... and a's call ends: no reservation any more
  delegate.release_held();
  check_denied(b.wait(), "quota tenant=acme: 1 of 1 sandboxes in use");
  hook->call_finished("b", false);

  // A list begun after the commit is trusted: a deleted since is not counted.
  delegate.set_holding(false);
  delegate.remove("a");
  check_allowed(validate(*hook, "c", "acme"));
}

TEST_CASE("quota: ValidateSandboxCreate checks without reserving", "[builtin][quota]") {
  FakeDelegate delegate;
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 1)",
                        delegate.context());
  check_allowed(validate(*hook, "x", "acme", "ValidateSandboxCreate"));
  check_allowed(validate(*hook, "y", "acme", "ValidateSandboxCreate"));
  check_allowed(validate(*hook, "z", "acme"));  // x and y hold nothing
  check_denied(validate(*hook, "w", "acme", "ValidateSandboxCreate"), "quota tenant=acme: 1 of 1 sandboxes in use");
  // The validations' ends never release z's place.
  hook->call_finished("x", false);
  hook->call_finished("y", false);
  hook->call_finished("w", false);
  check_denied(validate(*hook, "v", "acme"), "quota tenant=acme: 1 of 1 sandboxes in use");
  // Validate and create of one id (the gateway's order): the validation's
  // end does not release the create's place.
  hook->call_finished("v", false);
  check_allowed(validate(*hook, "z2", "other", "ValidateSandboxCreate"));
  check_allowed(validate(*hook, "z2", "other"));
  hook->call_finished("z2", false);  // the validation's end
  check_denied(validate(*hook, "z3", "other"), "quota tenant=other: 1 of 1 sandboxes in use");
}

TEST_CASE("quota: a failed list is a failure, for the failure policy to judge", "[builtin][quota]") {
  FakeDelegate delegate;
  delegate.set_failing(true);
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 1)",
                        delegate.context());
  auto outcome = validate(*hook, "a", "acme");
  CHECK(outcome.failure.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(outcome.failure.error_message() == "cannot count sandboxes: ListSandboxes: delegate down");
  hook->call_finished("a", false);
  delegate.set_failing(false);
  check_allowed(validate(*hook, "b", "acme"));  // a reserved nothing

  auto no_list = make_hook("quota", "label = \"tenant\"\nmax = 1");
  outcome = validate(*no_list, "a", "acme");
  CHECK(outcome.failure.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(outcome.failure.error_message() == "cannot count sandboxes: no delegate to list them");
}

TEST_CASE("quota: a cancelled or stopped invocation ends at once and reserves nothing", "[builtin][quota]") {
  FakeDelegate delegate;
  auto hook = make_hook("quota", R"(label = "tenant"
    max = 1)",
                        delegate.context());
  delegate.set_holding(true);
  auto cancel = std::make_shared<CancelSignal>();
  Waiter a;
  start_validate(*hook, "a", "acme", a, "CreateSandbox", cancel);
  CHECK_FALSE(a.ready());
  cancel->cancel();
  CHECK(a.wait().failure.error_code() == grpc::StatusCode::CANCELLED);
  delegate.release_held();  // the late answer is ignored: no second done, no reservation
  hook->call_finished("a", false);
  delegate.set_holding(false);
  check_allowed(validate(*hook, "b", "acme"));
  hook->call_finished("b", false);

  delegate.set_holding(true);
  Waiter c;
  start_validate(*hook, "c", "acme", c);
  hook->stop();
  auto stopped = c.wait();
  CHECK(stopped.failure.error_code() == grpc::StatusCode::UNAVAILABLE);
  delegate.release_held();
  Waiter d;
  start_validate(*hook, "d", "acme", d);
  CHECK(d.wait().failure.error_message() == "hook stopped");
}

TEST_CASE("quota: configuration errors name the full key", "[builtin][quota]") {
  CHECK(config_error_of("quota", "", 3) ==
        "hooks[3].config.label: missing (the label whose values are counted, such as \"tenant\")\n"
        "hooks[3].config.max: missing (sandboxes allowed per label value)");
  CHECK(config_error_of("quota", "label = \"tenant\"\nmax = 1\nlimit = 2") == "hooks[0].config.limit: unknown key");
  CHECK(config_error_of("quota", "label = \"tenant\"\nmax = -1") ==
        "hooks[0].config.max: must be between 0 and 1000000000");
  CHECK(config_error_of("quota", "label = \"tenant\"\nmax = 1\noverrides = { acme = \"5\" }") ==
        "hooks[0].config.overrides.acme: must be an integer");
  CHECK(config_error_of("quota", "label = \"tenant\"\nmax = 1\ncount_missing_label = true\nrequire_label = true") ==
        "hooks[0].config.require_label: contradicts count_missing_label = true (choose one)");
}

// ------------------------------------------- quota counting from the watch

namespace {

// The wrapper's upstream watch as quota sees it, kept in step with a
// FakeDelegate's store by the test.
class FakeWatch {
 public:
  std::shared_ptr<SandboxFeed> feed = std::make_shared<SandboxFeed>();

  BuiltinContext context(FakeDelegate& delegate) {
    BuiltinContext ctx = delegate.context();
    ctx.sandbox_feed = feed;
    return ctx;
  }
  void reported(const std::string& id, const std::string& tenant, bool deleting = false) {
    cpb::WatchSandboxesEvent ev;
    *ev.mutable_sandbox()->mutable_sandbox() = tenant_sandbox(id, tenant);
    ev.mutable_sandbox()->mutable_sandbox()->mutable_status()->set_deleting(deleting);
    feed->publish(ev);
  }
  void deleted(const std::string& id) {
    cpb::WatchSandboxesEvent ev;
    ev.mutable_deleted()->set_sandbox_id(id);
    feed->publish(ev);
  }
  // What a delegate does: the change, then its event.
  void create_at(FakeDelegate& delegate, const std::string& id, const std::string& tenant) {
    delegate.add(id, tenant);
    reported(id, tenant);
  }
  void delete_at(FakeDelegate& delegate, const std::string& id) {
    delegate.remove(id);
    deleted(id);
  }
};

std::string usage_of(const HookOutcome& outcome) {
  auto it = outcome.response.log_annotations().find("quota");
  return it == outcome.response.log_annotations().end() ? std::string() : it->second;
}

}  // namespace

TEST_CASE("quota: seeded by one list once the watch is live, then counts from events alone",
          "[builtin][quota][watch]") {
  FakeDelegate delegate;
  FakeWatch watch;
  delegate.add("a1", "acme");
  delegate.add("a2", "acme");
  delegate.add("o1", "other");
  delegate.add("gone", "acme", /*deleting=*/true);
  auto hook = make_hook("quota", "label = \"tenant\"\nmax = 3", watch.context(delegate));
  watch.feed->set_live(true);

  auto first = validate(*hook, "n1", "acme");
  check_allowed(first);
  CHECK(usage_of(first) == "tenant=acme: 2 of 3 in use before");
  CHECK(delegate.lists() == 1);
  CHECK(hook->describe()["counting"] == "watch");
  watch.create_at(delegate, "n1", "acme");
  hook->call_finished("n1", true);
  check_denied(validate(*hook, "n2", "acme"), "quota tenant=acme: 3 of 3 sandboxes in use");
  hook->call_finished("n2", false);

  // Sandboxes created and deleted behind the wrapper's back, seen by the watch.
  watch.delete_at(delegate, "a1");
  watch.delete_at(delegate, "a2");
  watch.create_at(delegate, "x1", "acme");
  watch.reported("x2", "acme", /*deleting=*/true);  // on its way out: not counted
  auto freed = validate(*hook, "n3", "acme");
  check_allowed(freed);
  CHECK(usage_of(freed) == "tenant=acme: 2 of 3 in use before");
  hook->call_finished("n3", false);
  check_allowed(validate(*hook, "o2", "other"));
  CHECK(delegate.lists() == 1);
  CHECK(hook->describe()["indexed"] == 3);  // o1, n1, x1
}

TEST_CASE("quota from the watch: creates in flight reserve; a commit counts once, reported or not",
          "[builtin][quota][watch]") {
  FakeDelegate delegate;
  FakeWatch watch;
  watch.feed->set_live(true);
  auto hook = make_hook("quota", "label = \"tenant\"\nmax = 2", watch.context(delegate));

  check_allowed(validate(*hook, "a", "acme"));  // seeds; a reserves
  check_allowed(validate(*hook, "b", "acme"));  // b reserves
  check_denied(validate(*hook, "c", "acme"), "quota tenant=acme: 2 of 2 sandboxes in use");
  hook->call_finished("c", false);

  // a commits before the watch reports it: it counts from the commit on...
  delegate.add("a", "acme");
  hook->call_finished("a", true);
  check_denied(validate(*hook, "d", "acme"), "quota tenant=acme: 2 of 2 sandboxes in use");
  hook->call_finished("d", false);
  // ... and once (not twice) after the report.
  watch.reported("a", "acme");
  check_denied(validate(*hook, "e", "acme"), "quota tenant=acme: 2 of 2 sandboxes in use");
  hook->call_finished("e", false);

  // b's create failed: its place is free.
  hook->call_finished("b", false);
  auto f = validate(*hook, "f", "acme");
  check_allowed(f);
  CHECK(usage_of(f) == "tenant=acme: 1 of 2 in use before");
  // f reported before its call ended: counted once.
  watch.create_at(delegate, "f", "acme");
  hook->call_finished("f", true);
  check_denied(validate(*hook, "g", "acme"), "quota tenant=acme: 2 of 2 sandboxes in use");
  hook->call_finished("g", false);

  // Created and deleted again before its call ended: the commit adds nothing.
  watch.delete_at(delegate, "f");
  auto h = validate(*hook, "h", "acme");
  check_allowed(h);
  watch.create_at(delegate, "h", "acme");
  watch.delete_at(delegate, "h");
  hook->call_finished("h", true);
  auto i = validate(*hook, "i", "acme");
  check_allowed(i);
  CHECK(usage_of(i) == "tenant=acme: 1 of 2 in use before");  // a only
  hook->call_finished("i", false);
  CHECK(delegate.lists() == 1);
}

TEST_CASE("quota from the watch: a broken feed lists on every create until live and seeded again",
          "[builtin][quota][watch]") {
  FakeDelegate delegate;
  FakeWatch watch;
  delegate.add("a1", "acme");
  auto hook = make_hook("quota", "label = \"tenant\"\nmax = 2", watch.context(delegate));

  // Not live yet: every create lists.
  check_allowed(validate(*hook, "n1", "acme"));
  hook->call_finished("n1", false);
  check_allowed(validate(*hook, "n2", "acme"));
  hook->call_finished("n2", false);
  CHECK(delegate.lists() == 2);
  CHECK(hook->describe()["counting"] == "list");

  watch.feed->set_live(true);
  check_allowed(validate(*hook, "n3", "acme"));  // the seed
  hook->call_finished("n3", false);
  check_allowed(validate(*hook, "n4", "acme"));
  hook->call_finished("n4", false);
  CHECK(delegate.lists() == 3);

  // Broken: what the delegate does now may never be reported.
  watch.feed->set_live(false);
  delegate.add("a2", "acme");  // its event is lost
  check_denied(validate(*hook, "n5", "acme"), "quota tenant=acme: 2 of 2 sandboxes in use");
  hook->call_finished("n5", false);
  CHECK(delegate.lists() == 4);
  delegate.remove("a1");  // lost too
  check_allowed(validate(*hook, "n6", "acme"));
  hook->call_finished("n6", false);
  CHECK(delegate.lists() == 5);
  CHECK(hook->describe()["counting"] == "list");

  // Live again (resynced): one new seed, which shows what was lost.
  watch.feed->set_live(true);
  auto seeded = validate(*hook, "n7", "acme");
  check_allowed(seeded);
  CHECK(usage_of(seeded) == "tenant=acme: 1 of 2 in use before");
  watch.create_at(delegate, "n7", "acme");
  hook->call_finished("n7", true);
  check_denied(validate(*hook, "n8", "acme"), "quota tenant=acme: 2 of 2 sandboxes in use");
  hook->call_finished("n8", false);
  CHECK(delegate.lists() == 6);
  CHECK(hook->describe()["counting"] == "watch");
}

TEST_CASE("quota from the watch: events during the seed list win over it; validations wait for the seed",
          "[builtin][quota][watch]") {
  FakeDelegate delegate;
  FakeWatch watch;
  delegate.add("s1", "acme");
  delegate.add("s2", "acme");
  watch.feed->set_live(true);
  auto hook = make_hook("quota", "label = \"tenant\"\nmax = 3", watch.context(delegate));

  delegate.set_holding(true);
  Waiter a, b;
  start_validate(*hook, "a", "acme", a);  // the seed list's snapshot: s1, s2
  REQUIRE(delegate.held() == 1);
  watch.delete_at(delegate, "s1");  // after the snapshot
  watch.create_at(delegate, "s3", "acme");
  watch.create_at(delegate, "s4", "acme");
  start_validate(*hook, "b", "acme", b);  // joins the seed in flight
  CHECK(delegate.held() == 1);
  CHECK_FALSE(a.ready());
  delegate.release_held();
  // s2, s3, s4: the list alone would say s1, s2.
  check_denied(a.wait(), "quota tenant=acme: 3 of 3 sandboxes in use");
  check_denied(b.wait(), "quota tenant=acme: 3 of 3 sandboxes in use");
  hook->call_finished("a", false);
  hook->call_finished("b", false);
  CHECK(delegate.lists() == 1);
  watch.delete_at(delegate, "s4");
  delegate.set_holding(false);
  check_allowed(validate(*hook, "c", "acme"));
  CHECK(delegate.lists() == 1);
}

TEST_CASE("quota from the watch: a commit never reported is dropped after report_grace_ms by a new seed",
          "[builtin][quota][watch]") {
  FakeDelegate delegate;
  FakeWatch watch;
  watch.feed->set_live(true);
  auto hook = make_hook("quota", "label = \"tenant\"\nmax = 1\nreport_grace_ms = 300", watch.context(delegate));
  check_allowed(validate(*hook, "a", "acme"));
  hook->call_finished("a", true);  // committed, but the delegate shows it nowhere
  check_denied(validate(*hook, "b", "acme"), "quota tenant=acme: 1 of 1 sandboxes in use");
  hook->call_finished("b", false);
  CHECK(delegate.lists() == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  check_allowed(validate(*hook, "c", "acme"));  // a new seed decides: no a
  CHECK(delegate.lists() == 2);
  hook->call_finished("c", false);
  check_allowed(validate(*hook, "d", "acme"));
  CHECK(delegate.lists() == 2);
}

TEST_CASE("quota from the watch: 50 concurrent creates for one tenant, max 10: exactly 10 allowed, one list",
          "[builtin][quota][watch]") {
  FakeDelegate delegate;
  FakeWatch watch;
  delegate.set_max_delay_ms(5);
  delegate.add("other-1", "other");
  watch.feed->set_live(true);
  auto hook = make_hook("quota", "label = \"tenant\"\nmax = 10", watch.context(delegate));
  // Half the allowed creates are reported by the watch before the call
  // ends, half after; one publisher at a time, as the hub.
  std::mutex watch_mu;
  auto report_if = [&](int parity) {
    return [&, parity](const std::string& id, int i) {
      if (i % 2 != parity) return;
      std::lock_guard lock(watch_mu);
      watch.create_at(delegate, id, "acme");
    };
  };
  auto burst = concurrent_creates(*hook, report_if(0), report_if(1));
  CHECK(burst.allowed == 10);
  CHECK(burst.wrong_code == 0);
  CHECK(burst.denied == 40);
  CHECK(delegate.lists() == 1);
  check_denied(validate(*hook, "late", "acme"), "quota tenant=acme: 10 of 10 sandboxes in use");
  check_allowed(validate(*hook, "other-2", "other"));
  CHECK(delegate.lists() == 1);
}

// Not run by default: `build/tests/test_hooks_builtin "[.quota-cost]" -s`
// prints what one validation costs the hook itself once seeded.
TEST_CASE("quota from the watch: cost of one validation once seeded", "[.quota-cost]") {
  for (int fleet : {100, 10000}) {
    FakeDelegate delegate;
    FakeWatch watch;
    for (int i = 0; i < fleet; i++) delegate.add("s" + std::to_string(i), "team-" + std::to_string(i % 5));
    watch.feed->set_live(true);
    auto hook = make_hook("quota", "label = \"tenant\"\nmax = 1000000", watch.context(delegate));
    check_allowed(validate(*hook, "seed", "team-1"));
    hook->call_finished("seed", false);
    std::vector<std::shared_ptr<hookpb::HookRequest>> requests;
    for (int i = 0; i < 1000; i++) {
      requests.push_back(
          request_for(HookPhase::kValidate, "CreateSandbox", tenant_sandbox("n" + std::to_string(i), "team-1")));
    }
    InvokeOptions options;
    options.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int allowed = 0;
    constexpr int kCalls = 200000;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; i++) {
      const auto& req = requests[i % requests.size()];
      hook->invoke(req, options, [&](HookOutcome o) { allowed += o.response.allowed() ? 1 : 0; });
      hook->call_finished(req->sandbox_id(), false);
    }
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kCalls;
    CHECK(allowed == kCalls);
    CHECK(delegate.lists() == 1);
    WARN(fleet << " sandboxes: " << us << " us per validation + call_finished (" << kCalls << " calls)");
  }
}
