// Each schema mirrors the serde types of its upstream driver crate
// (openshell-driver-kubernetes, -docker, -podman, -vm), type names included,
// since serde puts them in its messages.
#include "tools/memory_driver/driver_config_schema.h"

#include "tools/memory_driver/serde_check.h"

#include <map>
#include <set>

namespace owrap::memory {

namespace {

namespace v1 = openshell::compute::v1;
using google::protobuf::Struct;
using google::protobuf::Value;
using grpc::Status;
using grpc::StatusCode;

Status invalid(DriverSchema schema, const std::string& text) {
  return Status(StatusCode::INVALID_ARGUMENT,
                std::string("invalid ") + schema_name(schema) + " driver_config: " + text);
}

// Field access on a config the schema check already accepted: a present field
// has its declared type.
const Value* field(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it == s.fields().end() || it->second.has_null_value() ? nullptr : &it->second;
}

const Struct& object_at(const Struct& s, const std::string& key) {
  const Value* v = field(s, key);
  return v ? v->struct_value() : Struct::default_instance();
}

std::vector<const Struct*> objects_at(const Struct& s, const std::string& key) {
  std::vector<const Struct*> out;
  if (const Value* v = field(s, key))
    for (const auto& item : v->list_value().values()) out.push_back(&item.struct_value());
  return out;
}

std::string string_at(const Struct& s, const std::string& key) {
  const Value* v = field(s, key);
  return v ? v->string_value() : std::string();
}

bool flag_at(const Struct& s, const std::string& key, bool fallback) {
  const Value* v = field(s, key);
  return v ? v->bool_value() : fallback;
}

// --- kubernetes ---------------------------------------------------------

serde::Check toleration() {
  // Upstream keeps tolerations as raw JSON and copies them into the pod spec,
  // where the API server decodes a core/v1 Toleration (camelCase keys).
  using serde::optional;
  return serde::object("Toleration", {{"key", optional(serde::string())},
                                      {"operator", optional(serde::string())},
                                      {"value", optional(serde::string())},
                                      {"effect", optional(serde::string())},
                                      {"tolerationSeconds", optional(serde::integer())}});
}

serde::Check kubernetes_pod() {
  return serde::object("KubernetesPodDriverConfig", {{"node_selector", serde::string_map()},
                                                     {"runtime_class_name", serde::string()},
                                                     {"tolerations", serde::seq(toleration())},
                                                     {"priority_class_name", serde::string()}});
}

serde::Check kubernetes_containers() {
  auto resources = serde::object("KubernetesContainerResourceConfig",
                                 {{"requests", serde::string_map()}, {"limits", serde::string_map()}});
  auto mount = serde::object("KubernetesDriverVolumeMountConfig", {{"name", serde::string()},
                                                                   {"mount_path", serde::string()},
                                                                   {"sub_path", serde::optional(serde::string())},
                                                                   {"read_only", serde::boolean()}});
  auto agent = serde::object("KubernetesContainerDriverConfig",
                             {{"resources", resources}, {"volume_mounts", serde::seq(mount)}});
  return serde::object("KubernetesDriverContainersConfig", {{"agent", agent}});
}

serde::Check kubernetes_volume() {
  auto claim = serde::object("KubernetesPersistentVolumeClaimConfig",
                             {{"claim_name", serde::string()}, {"read_only", serde::boolean()}});
  return serde::object("KubernetesDriverVolumeConfig", {{"name", serde::string()}, {"persistent_volume_claim", claim}});
}

const serde::Check& kubernetes_schema() {
  static const serde::Check check =
      serde::object("KubernetesSandboxDriverConfig", {{"pod", kubernetes_pod()},
                                                      {"containers", kubernetes_containers()},
                                                      {"volumes", serde::seq(kubernetes_volume())}});
  return check;
}

// Upstream's validate() after decoding, the part a hook most easily gets
// wrong: mounts must name a declared volume (name and DNS checks are left out).
std::optional<std::string> kubernetes_volume_references(const Struct& config) {
  std::map<std::string, bool> read_only;  // volume name -> PVC read_only (default true)
  for (const Struct* volume : objects_at(config, "volumes")) {
    std::string name = string_at(*volume, "name");
    if (!read_only.emplace(name, flag_at(object_at(*volume, "persistent_volume_claim"), "read_only", true)).second) {
      return "duplicate kubernetes driver_config volume '" + name + "'";
    }
  }
  for (const Struct* mount : objects_at(object_at(object_at(config, "containers"), "agent"), "volume_mounts")) {
    std::string name = string_at(*mount, "name");
    auto it = read_only.find(name);
    if (it == read_only.end()) return "volume mount references unknown kubernetes driver_config volume '" + name + "'";
    if (it->second && !flag_at(*mount, "read_only", true)) {
      return "volume mount '" + name + "' cannot set read_only=false because the PVC volume is read_only=true";
    }
  }
  return std::nullopt;
}

Status check_kubernetes(const Value& root) {
  if (auto e = kubernetes_schema()(root, "")) return invalid(DriverSchema::kubernetes, e->text());
  if (auto e = kubernetes_volume_references(root.struct_value())) return invalid(DriverSchema::kubernetes, *e);
  return Status::OK;
}

// --- docker / podman -----------------------------------------------------

serde::Check container_mount(const std::string& type_name) {
  using serde::Field;
  auto str = serde::string();
  Field source{"source", str, true}, target{"target", str, true}, read_only{"read_only", serde::boolean()};
  Field subpath{"subpath", serde::optional(str)};
  Field selinux{"selinux_label", serde::optional(serde::unit_enum({"shared", "private"}))};
  return serde::tagged(type_name, "type",
                       {{"bind", {source, target, read_only, selinux}},
                        {"volume", {source, target, read_only, subpath}},
                        {"tmpfs",
                         {target,
                          {"options", serde::seq(str)},
                          {"size_bytes", serde::optional(serde::f64())},
                          {"mode", serde::optional(serde::f64())}}},
                        {"image", {source, target, read_only, subpath}}});
}

serde::Check container_schema(const std::string& type_prefix) {
  return serde::object(type_prefix + "SandboxDriverConfig",
                       {{"cdi_devices", serde::non_empty_string_list()},
                        {"mounts", serde::seq(container_mount(type_prefix + "DriverMountConfig"))}});
}

// openshell_core::gpu::validate_specific_gpu_device_request: exact device ids
// in driver_config must match the sandbox's GPU request.
std::optional<std::string> specific_gpu_devices(const v1::DriverSandbox& sandbox, const Struct& config,
                                                const std::string& key) {
  const Value* list = field(config, key);
  if (list == nullptr || list->list_value().values().empty()) return std::nullopt;
  std::string what = "driver_config." + key;
  std::set<std::string> seen;
  for (const auto& id : list->list_value().values()) {
    if (!seen.insert(id.string_value()).second)
      return what + " contains duplicate device ID '" + id.string_value() + "'";
  }
  const auto& requirements = sandbox.spec().resource_requirements();
  if (!requirements.has_gpu()) return what + " requires a gpu request";
  uint32_t count = requirements.gpu().has_count() ? requirements.gpu().count() : 1;
  if (count == 0) return std::string("gpu count must be greater than 0");
  size_t n = list->list_value().values_size();
  if (count != n)
    return "gpu count (" + std::to_string(count) + ") must match " + what + " length (" + std::to_string(n) + ")";
  return std::nullopt;
}

bool has_image_mount(const Struct& config) {
  for (const Struct* mount : objects_at(config, "mounts"))
    if (string_at(*mount, "type") == "image") return true;
  return false;
}

Status check_container_driver(DriverSchema schema, const Value& root, const v1::DriverSandbox& sandbox) {
  static const serde::Check docker = container_schema("Docker");
  static const serde::Check podman = container_schema("Podman");
  const serde::Check& check = schema == DriverSchema::docker ? docker : podman;
  if (auto e = check(root, "")) return invalid(schema, e->text());
  if (auto e = specific_gpu_devices(sandbox, root.struct_value(), "cdi_devices"))
    return Status(StatusCode::INVALID_ARGUMENT, *e);
  // Podman mounts images; Docker's driver refuses them when it builds the container.
  if (schema == DriverSchema::docker && has_image_mount(root.struct_value())) {
    return Status(StatusCode::FAILED_PRECONDITION,
                  "invalid docker driver_config: docker image mounts are not supported");
  }
  return Status::OK;
}

// --- vm ------------------------------------------------------------------

Status check_vm(const Value& root, const v1::DriverSandbox& sandbox) {
  static const serde::Check vm =
      serde::object("VmSandboxDriverConfig", {{"gpu_device_ids", serde::non_empty_string_list()}});
  if (auto e = vm(root, "")) return invalid(DriverSchema::vm, e->text());
  if (auto e = specific_gpu_devices(sandbox, root.struct_value(), "gpu_device_ids"))
    return Status(StatusCode::INVALID_ARGUMENT, *e);
  const Value* ids = field(root.struct_value(), "gpu_device_ids");
  if (ids != nullptr && ids->list_value().values_size() > 1) {
    return Status(StatusCode::INVALID_ARGUMENT, "vm driver currently supports at most one gpu_device_ids entry");
  }
  return Status::OK;
}

}  // namespace

std::optional<DriverSchema> parse_driver_schema(const std::string& name) {
  for (auto s :
       {DriverSchema::none, DriverSchema::kubernetes, DriverSchema::docker, DriverSchema::podman, DriverSchema::vm}) {
    if (name == schema_name(s)) return s;
  }
  return std::nullopt;
}

const char* schema_name(DriverSchema schema) {
  switch (schema) {
    case DriverSchema::kubernetes:
      return "kubernetes";
    case DriverSchema::docker:
      return "docker";
    case DriverSchema::podman:
      return "podman";
    case DriverSchema::vm:
      return "vm";
    default:
      return "none";
  }
}

Status check_driver_config(DriverSchema schema, const v1::DriverSandbox& sandbox) {
  const auto& tmpl = sandbox.spec().template_();
  // Upstream decodes an absent block as the all-default config: nothing to refuse.
  if (schema == DriverSchema::none || !tmpl.has_driver_config()) return Status::OK;
  Value root;
  *root.mutable_struct_value() = tmpl.driver_config();
  switch (schema) {
    case DriverSchema::kubernetes:
      return check_kubernetes(root);
    case DriverSchema::vm:
      return check_vm(root, sandbox);
    default:
      return check_container_driver(schema, root, sandbox);
  }
}

}  // namespace owrap::memory
