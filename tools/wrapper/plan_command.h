// `openshell-driver-wrapper plan` and the hook part of `check-config`: the
// hook chain run without serving, like `terraform plan`.
#pragma once

#include "proxy/config.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace owrap {

// plan --config FILE [--sandbox FILE|-] [--validate-delegate]
int run_plan(const std::vector<std::string>& args);

// Builds every configured hook (builtin configuration errors surface here)
// and asks each grpc hook for its manifest. Adds "describe" to each entry
// of config_json["hooks"]; false (with `error`) when a hook cannot be built.
bool check_hooks(const WrapperConfig& config, nlohmann::json& config_json, std::string& error);

// What plan and check-config print. It quotes hooks (an exec hook's stderr,
// a grpc hook's status message), which need not be UTF-8: such bytes print
// as U+FFFD, where a plain dump() would throw and abort the tool.
std::string printable_json(const nlohmann::json& doc);

}  // namespace owrap
