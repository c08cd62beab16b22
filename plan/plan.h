// TEMPORARY stand-in for the plan/ component being written on branch
// wt-plan; replaced by it at merge. Same API, none of the safety rules.
#pragma once

#include "common/result.h"
#include "common/secrets.h"
#include "compute_driver.pb.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace owrap {

struct PatchRules {
  std::vector<std::string> extra_protected;
  size_t max_patches = 32;
  size_t max_bytes = 1 << 20;
};
struct PlanChange {
  std::string hook;
  std::string op;
  std::string path;
  nlohmann::json value;
};

class Plan {
 public:
  static Result<Plan> from(const openshell::compute::v1::DriverSandbox& sandbox) {
    Plan p;
    p.view_.CopyFrom(sandbox);
    scrub_secrets(p.view_);
    for (auto* env : {p.view_.mutable_spec()->mutable_environment(),
                      p.view_.mutable_spec()->mutable_template_()->mutable_environment()}) {
      for (auto it = env->begin(); it != env->end();) {
        if (it->first.rfind("OPENSHELL_SANDBOX_TOKEN", 0) == 0)
          it = env->erase(it);
        else
          ++it;
      }
    }
    std::string text;
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(p.view_, &text, o);
    p.json_ = nlohmann::json::parse(text);
    return p;
  }
  const openshell::compute::v1::DriverSandbox& view() const { return view_; }
  const nlohmann::json& json() const { return json_; }
  grpc::Status apply(const std::string& hook, const nlohmann::json& patches, bool, const PatchRules&) {
    try {
      nlohmann::json next = json_.patch(patches);
      openshell::compute::v1::DriverSandbox s;
      if (!google::protobuf::util::JsonStringToMessage(next.dump(), &s).ok())
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hook \"" + hook + "\": type error");
      json_ = std::move(next);
      view_ = s;
      for (const auto& op : patches) {
        owners_[op.value("path", "")] = hook;
        changes_.push_back({hook, op.value("op", ""), op.value("path", ""), op.value("value", nlohmann::json())});
      }
      return grpc::Status::OK;
    } catch (const std::exception& e) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hook \"" + hook + "\": " + e.what());
    }
  }
  Result<std::vector<PlanChange>> preview(const std::string& hook, const nlohmann::json& patches, bool may_override,
                                          const PatchRules& rules) const {
    Plan copy = *this;
    if (auto s = copy.apply(hook, patches, may_override, rules); !s.ok()) return Error{s.error_message()};
    return std::vector<PlanChange>(copy.changes_.begin() + changes_.size(), copy.changes_.end());
  }
  const std::map<std::string, std::string>& owners() const { return owners_; }
  const std::vector<PlanChange>& changes() const { return changes_; }
  grpc::Status write_back(openshell::compute::v1::DriverSandbox& target) const {
    std::string token = target.spec().sandbox_token();
    target.mutable_spec()->mutable_template_()->CopyFrom(view_.spec().template_());
    *target.mutable_spec()->mutable_environment() = view_.spec().environment();
    target.mutable_spec()->set_sandbox_token(token);
    return grpc::Status::OK;
  }

 private:
  openshell::compute::v1::DriverSandbox view_;
  nlohmann::json json_;
  std::map<std::string, std::string> owners_;
  std::vector<PlanChange> changes_;
};

}  // namespace owrap
