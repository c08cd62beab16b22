// The memory driver's --schema: each upstream driver's driver_config key set,
// types and error texts (serde's, behind "invalid <driver> driver_config: "),
// judged alike by ValidateSandboxCreate and CreateSandbox.
#include "tests/support/harness.h"

#include <grpcpp/grpcpp.h>
#include <catch2/catch.hpp>

using namespace owrap::test;
using Catch::Contains;

namespace {

// A memory driver started with `--schema <schema>` (none: no flag at all).
struct SchemaDriver {
  SchemaDriver(const TempDir& dir, const std::string& schema)
      : proc(dir, schema, schema == "none" ? std::vector<std::string>{} : std::vector<std::string>{"--schema", schema}),
        stub(stub_for(proc.socket)) {}

  grpc::Status validate(const v1::DriverSandbox& sandbox) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ValidateSandboxCreateRequest req;
    *req.mutable_sandbox() = sandbox;
    v1::ValidateSandboxCreateResponse resp;
    return stub->ValidateSandboxCreate(&ctx, req, &resp);
  }

  grpc::Status create(const v1::DriverSandbox& sandbox) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = sandbox;
    v1::CreateSandboxResponse resp;
    return stub->CreateSandbox(&ctx, req, &resp);
  }

  bool exists(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetSandboxRequest req;
    req.set_sandbox_id(id);
    v1::GetSandboxResponse resp;
    return stub->GetSandbox(&ctx, req, &resp).ok();
  }

  std::string version() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetCapabilitiesResponse resp;
    REQUIRE(stub->GetCapabilities(&ctx, {}, &resp).ok());
    return resp.driver_version();
  }

  // Validate and Create both accept the sandbox, and Create stores it.
  void accepts(const v1::DriverSandbox& sandbox) {
    auto v = validate(sandbox);
    INFO(v.error_message());
    REQUIRE(v.ok());
    auto c = create(sandbox);
    INFO(c.error_message());
    REQUIRE(c.ok());
    CHECK(exists(sandbox.id()));
  }

  // Validate and Create both refuse it with exactly `message`; nothing is created.
  void refuses(const v1::DriverSandbox& sandbox, const std::string& message,
               grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT) {
    for (const auto& s : {validate(sandbox), create(sandbox)}) {
      CHECK(s.error_code() == code);
      CHECK(s.error_message() == message);
    }
    CHECK_FALSE(exists(sandbox.id()));
  }

  MemoryDriverProc proc;
  std::unique_ptr<v1::ComputeDriver::Stub> stub;
};

int next_id = 0;

v1::DriverSandbox sandbox(const std::string& driver_config_json, int gpus = -1) {
  auto sb = make_sandbox("s-" + std::to_string(++next_id), driver_config_json);
  // -1: no GPU request; 0: a request without a count (upstream reads it as 1).
  if (gpus >= 0) {
    auto* gpu = sb.mutable_spec()->mutable_resource_requirements()->mutable_gpu();
    if (gpus > 0) gpu->set_count(gpus);
  }
  return sb;
}

const char* kKubernetesValid = R"({
  "pod": {
    "node_selector": {"accelerator": "nvidia"},
    "runtime_class_name": "kata-containers",
    "priority_class_name": "gpu-workload",
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]
  },
  "containers": {"agent": {
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}},
    "volume_mounts": [{"name": "user-data", "mount_path": "/sandbox/data", "sub_path": "workspace", "read_only": false}]
  }},
  "volumes": [{"name": "user-data", "persistent_volume_claim": {"claim_name": "pvc-user-data", "read_only": false}}]
})";

const char* kContainerValid = R"({
  "cdi_devices": ["nvidia.com/gpu=0"],
  "mounts": [
    {"type": "bind", "source": "/srv/data", "target": "/sandbox/data", "read_only": true, "selinux_label": "shared"},
    {"type": "volume", "source": "cache", "target": "/sandbox/cache", "read_only": false, "subpath": "a"},
    {"type": "tmpfs", "target": "/sandbox/tmp", "options": ["noexec"], "size_bytes": 1048576, "mode": 448}
  ]
})";

}  // namespace

TEST_CASE("--schema kubernetes accepts the Kubernetes driver's block on Validate and Create", "[tools][schema]") {
  TempDir dir;
  SchemaDriver k8s(dir, "kubernetes");
  k8s.accepts(sandbox(kKubernetesValid));
  k8s.accepts(sandbox("{}"));
  CHECK(k8s.version() == "0.1.0 (schema kubernetes)");
}

TEST_CASE("--schema kubernetes refuses unknown keys and wrong types as the Kubernetes driver does", "[tools][schema]") {
  TempDir dir;
  SchemaDriver k8s(dir, "kubernetes");
  const std::string prefix = "invalid kubernetes driver_config: ";
  // The root: serde's text exactly as upstream prints it.
  k8s.refuses(sandbox(R"({"cdi_devices": ["nvidia.com/gpu=0"]})"),
              prefix + "unknown field `cdi_devices`, expected one of `pod`, `containers`, `volumes`");
  // Nested: the same text, after the path of the object that has the key.
  k8s.refuses(sandbox(R"({"pod": {"nodeSelector": {"a": "b"}}})"),
              prefix +
                  "pod: unknown field `nodeSelector`, expected one of `node_selector`, `runtime_class_name`, "
                  "`tolerations`, `priority_class_name`");
  k8s.refuses(sandbox(R"({"containers": {"agent": {"resources": {"requests": {}, "claims": []}}}})"),
              prefix + "containers.agent.resources: unknown field `claims`, expected `requests` or `limits`");
  k8s.refuses(sandbox(R"({"pod": {"tolerations": [{"key": "k"}, {"key": "k", "toleration_seconds": 5}]}})"),
              prefix +
                  "pod.tolerations[1]: unknown field `toleration_seconds`, expected one of `key`, `operator`, "
                  "`value`, `effect`, `tolerationSeconds`");
  // Type errors name the path of the offending value.
  k8s.refuses(sandbox(R"({"pod": "not-an-object"})"),
              prefix + "pod: invalid type: string \"not-an-object\", expected struct KubernetesPodDriverConfig");
  k8s.refuses(sandbox(R"({"pod": ["a"]})"),
              prefix + "pod: invalid type: sequence, expected struct KubernetesPodDriverConfig");
  k8s.refuses(sandbox(R"({"pod": {"node_selector": "gpu"}})"),
              prefix + "pod.node_selector: invalid type: string \"gpu\", expected a map");
  k8s.refuses(sandbox(R"({"containers": {"agent": {"resources": {"limits": {"cpu": 2}}}}})"),
              prefix + "containers.agent.resources.limits.cpu: invalid type: floating point `2.0`, expected a string");
  k8s.refuses(sandbox(R"({"volumes": {"name": "v"}})"), prefix + "volumes: invalid type: map, expected a sequence");
  k8s.refuses(sandbox(R"({"volumes": [{"name": "v", "persistent_volume_claim": {"claim_name": "c"}}],
                  "containers": {"agent": {"volume_mounts": [{"name": "v", "mount_path": "/m", "read_only": "yes"}]}}})"),
              prefix + "containers.agent.volume_mounts[0].read_only: invalid type: string \"yes\", expected a boolean");
  // After decoding, a mount must name a declared volume.
  k8s.refuses(sandbox(R"({"containers": {"agent": {"volume_mounts": [{"name": "data", "mount_path": "/m"}]}}})"),
              prefix + "volume mount references unknown kubernetes driver_config volume 'data'");
}

TEST_CASE("--schema prints numbers in type errors as serde_json does", "[tools][schema]") {
  TempDir dir;
  SchemaDriver k8s(dir, "kubernetes");
  for (auto [json, printed] : std::vector<std::pair<std::string, std::string>>{
           {"0.5", "0.5"}, {"-3", "-3.0"}, {"1e21", "1e21"}, {"1.5e-7", "1.5e-7"}, {"123456.789", "123456.789"}}) {
    k8s.refuses(sandbox(R"({"pod": {"runtime_class_name": )" + json + "}}"),
                "invalid kubernetes driver_config: pod.runtime_class_name: invalid type: floating point `" + printed +
                    "`, expected a string");
  }
}

TEST_CASE("--schema docker and podman: cdi_devices and mounts tagged by type", "[tools][schema]") {
  TempDir dir;
  for (std::string name : {"docker", "podman"}) {
    DYNAMIC_SECTION(name) {
      SchemaDriver d(dir, name);
      const std::string prefix = "invalid " + name + " driver_config: ";
      d.accepts(sandbox(kContainerValid, 1));
      CHECK(d.version() == "0.1.0 (schema " + name + ")");
      d.refuses(sandbox(R"({"gpu_device_ids": ["0"]})"),
                prefix + "unknown field `gpu_device_ids`, expected `cdi_devices` or `mounts`");
      d.refuses(sandbox(R"({"mounts": [{"type": "bind", "source": "/a", "target": "/b", "size_bytes": 1}]})"),
                prefix +
                    "mounts[0]: unknown field `size_bytes`, expected one of `source`, `target`, `read_only`, "
                    "`selinux_label`");
      d.refuses(sandbox(R"({"mounts": [{"type": "nfs", "source": "/a", "target": "/b"}]})"),
                prefix + "mounts[0]: unknown variant `nfs`, expected one of `bind`, `volume`, `tmpfs`, `image`");
      d.refuses(sandbox(R"({"mounts": [{"source": "/a", "target": "/b"}]})"),
                prefix + "mounts[0]: missing field `type`");
      d.refuses(sandbox(R"({"mounts": [{"type": "volume", "target": "/b"}]})"),
                prefix + "mounts[0]: missing field `source`");
      d.refuses(sandbox(R"({"mounts": [{"type": "tmpfs", "target": "/t", "size_bytes": "1Mi"}]})"),
                prefix + "mounts[0].size_bytes: invalid type: string \"1Mi\", expected f64");
      d.refuses(sandbox(R"({"mounts": [{"type": "bind", "source": "/a", "target": "/b", "selinux_label": "z"}]})"),
                prefix + "mounts[0].selinux_label: unknown variant `z`, expected `shared` or `private`");
      d.refuses(sandbox(R"({"cdi_devices": "nvidia.com/gpu=0"})", 1),
                prefix + "cdi_devices: invalid type: string \"nvidia.com/gpu=0\", expected a sequence");
      d.refuses(sandbox(R"({"cdi_devices": []})", 1), prefix + "cdi_devices: must be a non-empty list of strings");
      // Exact devices must match the sandbox's GPU request.
      d.refuses(sandbox(R"({"cdi_devices": ["nvidia.com/gpu=0"]})"),
                "driver_config.cdi_devices requires a gpu request");
      d.refuses(sandbox(R"({"cdi_devices": ["nvidia.com/gpu=0"]})", 2),
                "gpu count (2) must match driver_config.cdi_devices length (1)");
      auto image = sandbox(R"({"mounts": [{"type": "image", "source": "ghcr.io/x/models:1", "target": "/models"}]})");
      if (name == "docker") {
        d.refuses(image, "invalid docker driver_config: docker image mounts are not supported",
                  grpc::StatusCode::FAILED_PRECONDITION);
      } else {
        d.accepts(image);
      }
    }
  }
}

TEST_CASE("--schema vm: gpu_device_ids, at most one", "[tools][schema]") {
  TempDir dir;
  SchemaDriver vm(dir, "vm");
  vm.accepts(sandbox(R"({"gpu_device_ids": ["0000:2d:00.0"]})", 0));
  vm.accepts(sandbox("{}"));
  CHECK(vm.version() == "0.1.0 (schema vm)");
  vm.refuses(sandbox(R"({"gpu_device_ids": ["0000:2d:00.0", "0000:3d:00.0"]})", 2),
             "vm driver currently supports at most one gpu_device_ids entry");
  vm.refuses(sandbox(R"({"gpu_device_ids": ["0000:2d:00.0", "0000:3d:00.0"]})"),
             "driver_config.gpu_device_ids requires a gpu request");
  vm.refuses(sandbox(R"({"gpu_device_ids": ["0000:2d:00.0", "0000:2d:00.0"]})", 2),
             "driver_config.gpu_device_ids contains duplicate device ID '0000:2d:00.0'");
  vm.refuses(sandbox(R"({"cdi_devices": ["nvidia.com/gpu=0"]})", 1),
             "invalid vm driver_config: unknown field `cdi_devices`, expected `gpu_device_ids`");
  vm.refuses(sandbox(R"({"gpu_device_ids": [" "]})", 1),
             "invalid vm driver_config: gpu_device_ids: [0] must be a non-empty string");
  vm.refuses(sandbox(R"({"gpu_device_ids": [7]})", 1),
             "invalid vm driver_config: gpu_device_ids[0]: invalid type: floating point `7.0`, expected a string");
}

TEST_CASE("without --schema the memory driver keeps its own fault block", "[tools][schema]") {
  TempDir dir;
  SchemaDriver plain(dir, "none");
  CHECK(plain.version() == "0.1.0");
  plain.accepts(sandbox(R"({"fail": {"StopSandbox": "UNAVAILABLE"}, "delay_ms": {"GetSandbox": 1}})"));
  plain.accepts(sandbox("{}"));
  plain.refuses(sandbox(R"({"pod": {"runtime_class_name": "kata"}})"),
                "invalid memory driver_config: unknown field \"pod\"");
}

TEST_CASE("--schema with an unknown name is a usage error", "[tools][schema]") {
  std::string out, err;
  CHECK(run_command({memory_bin(), "--bind-socket", "/nonexistent/x.sock", "--schema", "lxd"}, &out, &err) == 2);
  CHECK_THAT(err, Contains("unknown schema \"lxd\""));
}
