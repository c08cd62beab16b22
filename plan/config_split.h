// Splits DriverSandboxTemplate.driver_config into the wrapper's own block and
// the base driver's block. The gateway forwards only the block keyed by the
// name it knows the wrapper by:
//
//  nested (gateway knows the wrapper as `wrapper_name`):
//    {"<delegate_name>": {...base block...}, <wrapper-owned keys>}
//  inline (gateway knows the wrapper as `delegate_name`, so existing templates
//  keep working): the base block, with the wrapper's own block under the key
//  `wrapper_name`.
//
// A wrapper-owned key nothing claims is INVALID_ARGUMENT naming its full path.
// platform_config is never touched.
#pragma once

#include "call/stage.h"
#include "compute_driver.pb.h"

#include <google/protobuf/struct.pb.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <set>
#include <string>

namespace owrap {

enum class ConfigMode { kNested, kInline };

struct ConfigSplitOptions {
  std::string wrapper_name;
  std::string delegate_name;
  ConfigMode mode = ConfigMode::kNested;
  // Wrapper-owned keys that a component (later: a hook) has claimed.
  std::set<std::string> claimed_keys;
};

class DriverConfigSplitter {
 public:
  explicit DriverConfigSplitter(ConfigSplitOptions options) : options_(std::move(options)) {}

  // Rewrites `tmpl.driver_config` to the delegate's block (absent stays
  // absent) and stores the wrapper-owned keys in `wrapper_block`.
  grpc::Status split(openshell::compute::v1::DriverSandboxTemplate& tmpl,
                     google::protobuf::Struct& wrapper_block) const;

  // The path of the block the gateway hands us, for error messages.
  std::string block_path() const;
  const ConfigSplitOptions& options() const { return options_; }

 private:
  grpc::Status check_claimed(const google::protobuf::Struct& wrapper_block, const std::string& path) const;
  ConfigSplitOptions options_;
};

// The stage that splits driver_config on ValidateSandboxCreate and
// CreateSandbox, leaving the wrapper's block in CallState::wrapper_config.
Stage config_split_stage(std::shared_ptr<const DriverConfigSplitter> splitter);

}  // namespace owrap
