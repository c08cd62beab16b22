#include "plan/config_split.h"

namespace owrap {

using grpc::Status;
using grpc::StatusCode;

std::string DriverConfigSplitter::block_path() const {
  return "driver_config." + (options_.mode == ConfigMode::kNested ? options_.wrapper_name : options_.delegate_name);
}

Status DriverConfigSplitter::check_claimed(const google::protobuf::Struct& wrapper_block,
                                           const std::string& path) const {
  // Report keys in sorted order so the message is stable.
  std::set<std::string> keys;
  for (const auto& [key, _] : wrapper_block.fields()) keys.insert(key);
  for (const auto& key : keys) {
    if (!options_.claimed_keys.count(key)) {
      return Status(StatusCode::INVALID_ARGUMENT, path + "." + key + ": unknown key (no component of wrapper \"" +
                                                      options_.wrapper_name + "\" claims it)");
    }
  }
  return Status::OK;
}

Status DriverConfigSplitter::split(openshell::compute::v1::DriverSandboxTemplate& tmpl,
                                   google::protobuf::Struct& wrapper_block) const {
  wrapper_block.Clear();
  if (!tmpl.has_driver_config()) return Status::OK;
  google::protobuf::Struct* block = tmpl.mutable_driver_config();
  const std::string path = block_path();

  if (options_.mode == ConfigMode::kNested) {
    google::protobuf::Struct base;
    bool has_base = false;
    for (auto& [key, value] : *block->mutable_fields()) {
      if (key == options_.delegate_name) {
        if (!value.has_struct_value()) {
          return Status(StatusCode::INVALID_ARGUMENT, path + "." + key + ": must be an object");
        }
        base = std::move(*value.mutable_struct_value());
        has_base = true;
      } else {
        (*wrapper_block.mutable_fields())[key] = std::move(value);
      }
    }
    if (auto s = check_claimed(wrapper_block, path); !s.ok()) return s;
    if (has_base)
      *block = std::move(base);
    else
      tmpl.clear_driver_config();
    return Status::OK;
  }

  auto it = block->mutable_fields()->find(options_.wrapper_name);
  if (it == block->mutable_fields()->end()) return Status::OK;
  const std::string own_path = path + "." + options_.wrapper_name;
  if (!it->second.has_struct_value()) return Status(StatusCode::INVALID_ARGUMENT, own_path + ": must be an object");
  wrapper_block = std::move(*it->second.mutable_struct_value());
  block->mutable_fields()->erase(it);
  if (auto s = check_claimed(wrapper_block, own_path); !s.ok()) return s;
  // Only the wrapper's key was given: the base driver sees no block at all,
  // exactly as if the template had not addressed it.
  if (block->fields().empty()) tmpl.clear_driver_config();
  return Status::OK;
}

Stage config_split_stage(std::shared_ptr<const DriverConfigSplitter> splitter) {
  return Stage{
      "driver_config_split",
      rpc_set({Rpc::kValidateSandboxCreate, Rpc::kCreateSandbox}),
      [splitter](CallState& call, google::protobuf::Message& request, const Resume&) {
        v1::DriverSandbox* sandbox = sandbox_of(call.rpc, request);
        if (sandbox == nullptr || !sandbox->has_spec() || !sandbox->spec().has_template_()) return StepResult::done();
        return StepResult::done(splitter->split(*sandbox->mutable_spec()->mutable_template_(), call.wrapper_config));
      },
      nullptr,
      nullptr,
  };
}

}  // namespace owrap
