// bench/plan_json: what the plan's protobuf <-> JSON conversions cost, in
// microseconds per conversion, on the sandbox bench/hooks creates after the
// `defaults` hook of its kDefaultsHook config has patched it. Prints figures;
// asserts nothing.
//
//   bench_plan_json [milliseconds per figure (300)]
//
// Each figure is the median of 9 batches, interleaved so that drift of a
// shared machine hits every figure alike. "protobuf" is protobuf's util (the
// code the walks replaced, kept as owrap::protobuf_json); built from a tree
// without plan/proto_json.h (the old code) it prints the old figures only.
#include "hooks/builtin/builtin_hook.h"
#include "hooks/builtin/builtins.h"
#include "plan/plan.h"
#include "plan/sandbox_json.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#if __has_include("plan/proto_json.h")
#define OWRAP_BENCH_HAS_REFERENCE 1
#endif

using namespace owrap;
using nlohmann::json;
namespace v1 = openshell::compute::v1;
using Clock = std::chrono::steady_clock;

namespace {

// As bench/hooks.cc's kDefaultsHook.
const char* kDefaultsConfig = R"(
labels = { tenant = "{labels.team}", "sandbox-ref" = "{sandbox.namespace}/{sandbox.name}" }
environment = { SANDBOX_IMAGE = "{template.image}", HTTP_PROXY = "http://proxy.internal:3128" }

[driver_config.pod]
node_selector = { pool = "sandboxes" }
tolerations = [ { key = "sandbox", operator = "Exists", effect = "NoSchedule" } ]
)";

// bench/hooks.cc's bench_sandbox (tests/support make_sandbox plus resources).
v1::DriverSandbox bench_sandbox() {
  v1::DriverSandbox sb;
  sb.set_id("c-bench-1");
  sb.set_name("name-c-bench-1");
  sb.set_namespace_("default");
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  tmpl->set_image("ghcr.io/example/sandbox:1");
  (*tmpl->mutable_labels())["team"] = "blue";
  (*sb.mutable_spec()->mutable_environment())["A"] = "1";
  auto* res = tmpl->mutable_resources();
  res->set_cpu_request("500m");
  res->set_cpu_limit("1");
  res->set_memory_request("512Mi");
  res->set_memory_limit("1Gi");
  return sb;
}

std::unique_ptr<Hook> defaults_hook() {
  HookSpec spec;
  spec.name = "defaults";
  spec.builtin = "defaults";
  spec.phases.set(static_cast<size_t>(HookPhase::kPrepare));
  spec.config_toml = std::make_shared<toml::table>(toml::parse(kDefaultsConfig));
  spec.config_key = "hooks[0].config";
  auto hook = make_builtin(spec, {});
  if (!hook) {
    std::fprintf(stderr, "bench_plan_json: %s\n", hook.error().c_str());
    std::exit(1);
  }
  return std::move(hook.value());
}

HookOutcome invoke(Hook& hook, std::shared_ptr<const hookpb::HookRequest> request) {
  HookOutcome out;
  InvokeOptions options;
  options.deadline = Clock::now() + std::chrono::seconds(2);
  hook.invoke(std::move(request), options, [&](HookOutcome o) { out = std::move(o); });
  return out;
}

// The chain's patches_to_json (hooks/chain_run.cc), with a chosen value writer.
json patches_json(const hookpb::HookResponse& response, json (*value_json)(const google::protobuf::Value&)) {
  json ops = json::array();
  for (const auto& p : response.patches())
    ops.push_back({{"op", p.op()}, {"path", p.path()}, {"value", value_json(p.value())}});
  return ops;
}

// The defaults hook answers prepared operations (HookOutcome::prepared); a
// hook over a transport sends the same operations with protobuf Values, as here.
hookpb::HookResponse as_transported(const HookOutcome& outcome) {
  hookpb::HookResponse response = outcome.response;
  for (const auto& op : outcome.prepared ? prepared_to_json(*outcome.prepared) : json::array()) {
    auto* p = response.add_patches();
    p->set_op(op.at("op").get<std::string>());
    p->set_path(op.at("path").get<std::string>());
    (void)google::protobuf::util::JsonStringToMessage(op.at("value").dump(), p->mutable_value());
  }
  return response;
}

json chain_value_json(const google::protobuf::Value& v) {
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(v, &text);
  return json::parse(text, nullptr, false);
}

// The old tree has no value_to_json: its chain converts as above.
#ifdef OWRAP_BENCH_HAS_REFERENCE
json (*const kValueJson)(const google::protobuf::Value&) = &value_to_json;
#else
json (*const kValueJson)(const google::protobuf::Value&) = &chain_value_json;
#endif

struct Figure {
  std::string name;
  std::function<void()> run;
  std::vector<double> us;  // per call, one per batch
};

// Calls per batch so that one batch takes about `ms` / 9.
int calls_for(const std::function<void()>& run, double ms) {
  auto t0 = Clock::now();
  int n = 0;
  while (std::chrono::duration<double, std::milli>(Clock::now() - t0).count() < 20) {
    run();
    n++;
  }
  return std::max(1, static_cast<int>(n * (ms / 9) / 20));
}

void measure(std::vector<Figure>& figures, double ms) {
  std::vector<int> calls;
  for (auto& f : figures) calls.push_back(calls_for(f.run, ms));
  for (int batch = 0; batch < 9; batch++) {
    for (size_t i = 0; i < figures.size(); i++) {
      auto t0 = Clock::now();
      for (int k = 0; k < calls[i]; k++) figures[i].run();
      figures[i].us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / calls[i]);
    }
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  double ms = argc > 1 ? std::atof(argv[1]) : 300;
  auto hook = defaults_hook();
  const v1::DriverSandbox before = bench_sandbox();
  auto request = std::make_shared<hookpb::HookRequest>();
  request->set_protocol_version(kHookProtocolVersion);
  request->set_phase(std::string(phase_name(HookPhase::kPrepare)));
  request->set_rpc("CreateSandbox");
  request->set_sandbox_id(before.id());
  *request->mutable_sandbox() = before;

  // The sandbox after the hook's patches: the realistic one to convert.
  auto outcome = invoke(*hook, request);
  const hookpb::HookResponse transported = as_transported(outcome);
  auto plan = Plan::from(before);
  if (!outcome.failure.ok() || !plan ||
      !plan->apply("defaults", patches_json(transported, &chain_value_json), false, {}).ok()) {
    std::fprintf(stderr, "bench_plan_json: the defaults hook did not apply\n");
    return 1;
  }
  v1::DriverSandbox after;
  (void)plan->write_back(after);
  const json doc = message_to_json(after).value();

  volatile size_t sink = 0;
  v1::DriverSandbox scratch;
  std::vector<Figure> figures;
  figures.push_back({"message_to_json", [&] { sink = sink + message_to_json(after).value().size(); }, {}});
  figures.push_back({"json_to_message", [&] { sink = sink + json_to_message(doc, scratch).ok(); }, {}});
  figures.push_back({"value_to_json (patch values from a transport)",
                     [&] { sink = sink + patches_json(transported, kValueJson).size(); },
                     {}});
  figures.push_back(
      {"defaults hook: invoke (evaluate)", [&] { sink = sink + invoke(*hook, request).patch_count(); }, {}});
  figures.push_back({"Plan::from + its JSON view",
                     [&] {
                       auto p = Plan::from(before);
                       sink = sink + p->json().size();
                     },
                     {}});
  figures.push_back({"defaults hook: prepare as the chain runs it",
                     [&] {
                       auto p = Plan::from(before);
                       auto o = invoke(*hook, request);
                       sink = sink + p->apply_prepared("defaults", *o.prepared, false, {}).ok();
                     },
                     {}});
#ifdef OWRAP_BENCH_HAS_REFERENCE
  figures.push_back(
      {"message_to_json [protobuf]", [&] { sink = sink + protobuf_json::message_to_json(after).value().size(); }, {}});
  figures.push_back(
      {"json_to_message [protobuf]", [&] { sink = sink + protobuf_json::json_to_message(doc, scratch).ok(); }, {}});
  figures.push_back({"value_to_json [protobuf]",
                     [&] { sink = sink + patches_json(transported, &protobuf_json::value_to_json).size(); },
                     {}});
#endif
  measure(figures, ms);

  std::printf("bench_plan_json: the bench sandbox after the defaults hook (%zu bytes of JSON, %d patches)\n",
              doc.dump().size(), transported.patches_size());
  for (const auto& f : figures) {
    std::printf("  %-46s %9.2f us  (min %.2f)\n", f.name.c_str(), median(f.us),
                *std::min_element(f.us.begin(), f.us.end()));
  }
  return 0;
}
