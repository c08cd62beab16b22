// policy (validate): judges the final plan against fixed rules and names the
// rule in every denial. Rules run in a fixed order (images, labels,
// resources, GPUs) and every violation is reported, joined by "; ".
#include "common/toml_reader.h"
#include "hooks/builtin/builtin_hook.h"
#include "hooks/builtin/quantity.h"

#include <fnmatch.h>

namespace owrap {

namespace {

constexpr std::string_view kKind = "policy";
const PhaseSet kPhases = phases_of({HookPhase::kValidate});
constexpr std::string_view kDenied = "FAILED_PRECONDITION";
constexpr std::string_view kUnparsable = "INVALID_ARGUMENT";

// One resources.max_* rule.
struct QuantityLimit {
  std::string rule;   // "resources.max_cpu_limit"
  std::string field;  // "cpu_limit"
  std::string max_text;
  Quantity max;
};

struct Violation {
  std::string_view code;
  std::string message;
};

struct PolicyRules {
  std::vector<std::string> allowed_prefixes;
  std::vector<std::string> allowed_patterns;
  std::vector<std::string> required_labels;
  std::vector<QuantityLimit> limits;
  std::optional<int64_t> max_gpu_count;
};

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

const std::string& resource_field(const computepb::DriverResourceRequirements& r, std::string_view field) {
  if (field == "cpu_request") return r.cpu_request();
  if (field == "cpu_limit") return r.cpu_limit();
  if (field == "memory_request") return r.memory_request();
  return r.memory_limit();
}

class PolicyHook : public SyncBuiltinHook {
 public:
  PolicyHook(std::string name, PolicyRules rules)
      : SyncBuiltinHook(std::move(name), kKind, kPhases), rules_(std::move(rules)) {}

  bool reads_path_owners() const override { return false; }

 protected:
  HookOutcome evaluate(const hookpb::HookRequest& request) override {
    if (!is_phase(request, HookPhase::kValidate)) return HookOutcome::answered(allow_response());
    std::vector<Violation> violations;
    check_image(request.sandbox(), violations);
    check_labels(request.sandbox(), violations);
    check_resources(request.sandbox(), violations);
    check_gpus(request.sandbox(), violations);
    if (violations.empty()) return HookOutcome::answered(allow_response());
    std::string reason;
    for (const auto& v : violations) reason += (reason.empty() ? "" : "; ") + v.message;
    return HookOutcome::answered(deny_response(violations.front().code, std::move(reason)));
  }

 private:
  void check_image(const computepb::DriverSandbox& sandbox, std::vector<Violation>& out) const {
    const auto& prefixes = rules_.allowed_prefixes;
    const auto& patterns = rules_.allowed_patterns;
    if (prefixes.empty() && patterns.empty()) return;
    const std::string& image = sandbox.spec().template_().image();
    if (!image.empty()) {
      for (const auto& p : prefixes) {
        if (image.compare(0, p.size(), p) == 0) return;
      }
      for (const auto& p : patterns) {
        if (fnmatch(p.c_str(), image.c_str(), 0) == 0) return;
      }
    }
    std::string rule, why;
    if (!prefixes.empty()) {
      rule = "images.allowed_prefixes";
      why = "is not under any allowed prefix (" + joined(prefixes) + ")";
    }
    if (!patterns.empty()) {
      rule += std::string(rule.empty() ? "" : ", ") + "images.allowed_patterns";
      why += std::string(why.empty() ? "" : " and ") + "matches no allowed pattern (" + joined(patterns) + ")";
    }
    out.push_back({kDenied, "rule " + rule + ": image \"" + image + "\" " + why});
  }

  void check_labels(const computepb::DriverSandbox& sandbox, std::vector<Violation>& out) const {
    const auto& labels = sandbox.spec().template_().labels();
    std::vector<std::string> missing;
    for (const auto& key : rules_.required_labels) {
      auto it = labels.find(key);
      if (it == labels.end() || it->second.empty()) missing.push_back(key);
    }
    if (missing.empty()) return;
    out.push_back({kDenied, "rule labels.required: missing label" + std::string(missing.size() > 1 ? "s " : " ") +
                                joined(missing)});
  }

  void check_resources(const computepb::DriverSandbox& sandbox, std::vector<Violation>& out) const {
    const auto& resources = sandbox.spec().template_().resources();
    for (const auto& limit : rules_.limits) {
      const std::string& text = resource_field(resources, limit.field);
      if (text.empty()) continue;  // not requested: the base driver's default applies
      auto q = parse_quantity(text);
      if (!q) {
        out.push_back({kUnparsable, "rule " + limit.rule + ": template.resources." + limit.field + ": " + q.error()});
      } else if (q.value() > limit.max) {
        out.push_back({kDenied, "rule " + limit.rule + ": template.resources." + limit.field + " \"" + text +
                                    "\" exceeds " + limit.max_text});
      }
    }
  }

  void check_gpus(const computepb::DriverSandbox& sandbox, std::vector<Violation>& out) const {
    if (!rules_.max_gpu_count || !sandbox.spec().resource_requirements().has_gpu()) return;
    const auto& gpu = sandbox.spec().resource_requirements().gpu();
    // A GPU request without a count asks for one.
    int64_t count = gpu.has_count() ? gpu.count() : 1;
    if (count <= *rules_.max_gpu_count) return;
    out.push_back({kDenied, "rule resources.max_gpu_count: " + std::to_string(count) + " GPU" + (count > 1 ? "s" : "") +
                                " requested, at most " + std::to_string(*rules_.max_gpu_count) + " allowed"});
  }

  PolicyRules rules_;
};

void read_images(TomlSection& images, PolicyRules& rules) {
  images.allow_only({"allowed_prefixes", "allowed_patterns"});
  for (std::string_view key : {"allowed_prefixes", "allowed_patterns"}) {
    auto list = images.strings(key);
    if (!list) continue;
    if (list->empty()) images.error(key, "must not be empty (leave it out to allow every image)");
    for (size_t i = 0; i < list->size(); i++) {
      if ((*list)[i].empty()) images.error(std::string(key) + "[" + std::to_string(i) + "]", "must not be empty");
    }
    (key == "allowed_prefixes" ? rules.allowed_prefixes : rules.allowed_patterns) = std::move(*list);
  }
}

void read_resources(TomlSection& resources, PolicyRules& rules) {
  static const std::vector<std::string> kFields = {"cpu_request", "cpu_limit", "memory_request", "memory_limit"};
  std::vector<std::string> keys = {"max_gpu_count"};
  for (const auto& f : kFields) keys.push_back("max_" + f);
  resources.allow_only(keys);
  for (const auto& field : kFields) {
    std::string key = "max_" + field;
    auto text = resources.string(key);  // a wrong type is reported by string()
    if (!text) continue;
    auto q = parse_quantity(*text);
    if (!q) {
      resources.error(key, q.error());
      continue;
    }
    rules.limits.push_back({"resources." + key, field, *text, q.value()});
  }
  rules.max_gpu_count = resources.integer("max_gpu_count", 0, 1 << 20);
}

Result<std::unique_ptr<Hook>> make_policy(const HookSpec& spec, const BuiltinContext&) {
  std::vector<std::string> errors;
  TomlSection config(config_table(spec), spec.config_key, errors);
  config.allow_only({"images", "labels", "resources"});
  PolicyRules rules;
  if (auto images = config.table("images")) read_images(*images, rules);
  if (auto labels = config.table("labels")) {
    labels->allow_only({"required"});
    if (auto required = labels->strings("required")) rules.required_labels = std::move(*required);
  }
  if (auto resources = config.table("resources")) read_resources(*resources, rules);
  if (!errors.empty()) return config_error(errors);
  return std::unique_ptr<Hook>(new PolicyHook(spec.name, std::move(rules)));
}

}  // namespace

BuiltinKind policy_builtin() {
  return {kKind, kPhases, &make_policy};
}

}  // namespace owrap
