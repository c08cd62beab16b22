// What both hook benchmarks measure with: the sandbox a gateway sends and
// the builtin hook configurations (docs/hooks.md section 11, made to pass).
#pragma once

#include "tests/support/harness.h"

#include <string>

namespace owrap::bench {

// What a gateway sends: an image under the allowed prefix, a team label,
// resources within the policy's limits.
inline openshell::compute::v1::DriverSandbox bench_sandbox(const std::string& id, const std::string& team = "blue") {
  openshell::compute::v1::DriverSandbox sb = owrap::test::make_sandbox(id);
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  (*tmpl->mutable_labels())["team"] = team;
  auto* res = tmpl->mutable_resources();
  res->set_cpu_request("500m");
  res->set_cpu_limit("1");
  res->set_memory_request("512Mi");
  res->set_memory_limit("1Gi");
  sb.mutable_spec()->set_sandbox_token("bench-token-" + id);
  return sb;
}

// The sandbox of bench_sandbox(id) as kDefaultsHook leaves it, sent by the
// client itself (the base block nested under the delegate's name
// `delegate`): what the base driver gets either way, so that a wrapper with
// no hooks fed this shows what the bigger plan costs the driver, apart from
// what the hook costs.
inline openshell::compute::v1::DriverSandbox bench_sandbox_as_defaults_leave_it(const std::string& id,
                                                                                const std::string& delegate) {
  openshell::compute::v1::DriverSandbox sb = bench_sandbox(id);
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  (*tmpl->mutable_labels())["tenant"] = tmpl->labels().at("team");
  (*tmpl->mutable_labels())["sandbox-ref"] = sb.namespace_() + "/" + sb.name();
  auto& env = *sb.mutable_spec()->mutable_environment();
  env["SANDBOX_IMAGE"] = tmpl->image();
  env["HTTP_PROXY"] = "http://proxy.internal:3128";
  auto& pod =
      *(*(*tmpl->mutable_driver_config()->mutable_fields())[delegate].mutable_struct_value()->mutable_fields())["pod"]
           .mutable_struct_value()
           ->mutable_fields();
  (*pod["node_selector"].mutable_struct_value()->mutable_fields())["pool"].set_string_value("sandboxes");
  auto& toleration = *pod["tolerations"].mutable_list_value()->add_values()->mutable_struct_value()->mutable_fields();
  toleration["key"].set_string_value("sandbox");
  toleration["operator"].set_string_value("Exists");
  toleration["effect"].set_string_value("NoSchedule");
  return sb;
}

inline const char* kDefaultsHook = R"(
[[hooks]]
name = "defaults"
builtin = "defaults"
phases = ["prepare"]

[hooks.config]
labels = { tenant = "{labels.team}", "sandbox-ref" = "{sandbox.namespace}/{sandbox.name}" }
environment = { SANDBOX_IMAGE = "{template.image}", HTTP_PROXY = "http://proxy.internal:3128" }

[hooks.config.driver_config.pod]
node_selector = { pool = "sandboxes" }
tolerations = [ { key = "sandbox", operator = "Exists", effect = "NoSchedule" } ]
)";

inline const char* kPolicyHook = R"(
[[hooks]]
name = "policy"
builtin = "policy"
phases = ["validate"]

[hooks.config]
images.allowed_prefixes = ["ghcr.io/example/"]
images.allowed_patterns = ["docker.io/library/python:3.*"]
labels.required = ["team"]

[hooks.config.resources]
max_cpu_limit = "2"
max_cpu_request = "1500m"
max_memory_limit = "4Gi"
max_memory_request = "2Gi"
max_gpu_count = 1
)";

// A limit no run reaches: the hook counts, and allows.
inline const char* kQuotaHook = R"(
[[hooks]]
name = "quota"
builtin = "quota"
phases = ["validate"]

[hooks.config]
label = "team"
max = 1000000
)";

}  // namespace owrap::bench
