// defaults (prepare): adds labels, environment and base-driver driver_config
// defaults where the plan has no value yet. Objects deep-merge: missing keys
// are added, a caller's value is never overwritten. Templates in string
// values (hooks/builtin/template_string.h) are expanded only for the values
// actually added, so a default the caller already set cannot fail the call.
#include "common/toml_reader.h"
#include "hooks/builtin/builtin_hook.h"
#include "hooks/builtin/template_string.h"
#include "plan/paths.h"

namespace owrap {

namespace {

constexpr std::string_view kKind = "defaults";
const PhaseSet kPhases = phases_of({HookPhase::kPrepare});
const std::vector<std::string> kEnvironment = {"spec", "environment"};

// One group of defaults merged at one place in the plan.
struct Section {
  std::vector<std::string> pointer;  // reference tokens of the plan path, unescaped
  std::string config_key;            // "hooks[0].config.labels"
  nlohmann::json values;             // an object; strings are templates
  bool templated = true;             // some string in `values` has a brace: expand() must look
};

// Some string beneath `value` has "{" or "}" (a variable, or an escape).
bool has_braces(const nlohmann::json& value) {
  if (value.is_string()) return value.get_ref<const std::string&>().find_first_of("{}") != std::string::npos;
  if (value.is_object()) {
    for (const auto& [k, v] : value.get_ref<const nlohmann::json::object_t&>()) {
      if (has_braces(v)) return true;
    }
  }
  if (value.is_array()) {
    for (const auto& v : value.get_ref<const nlohmann::json::array_t&>()) {
      if (has_braces(v)) return true;
    }
  }
  return false;
}

// Where a default sits in the hook's config ("hooks[0].config.labels.tenant"),
// spelled out only for an error: most values never fail.
struct ConfigKey {
  const ConfigKey* parent = nullptr;
  const std::string* root = nullptr;  // set on the root only
  std::string_view member;            // ".member" below the parent, or
  size_t index = 0;                   // "[index]" when `member` is empty

  std::string str() const {
    if (root) return *root;
    return parent->str() + (member.empty() ? "[" + std::to_string(index) + "]" : "." + std::string(member));
  }
};

class Patcher {
 public:
  Patcher(const computepb::DriverSandbox& sandbox, nlohmann::json view) : sandbox_(sandbox), view_(std::move(view)) {}

  // Adds `section`'s missing values; an error names the config key.
  std::optional<std::string> merge(const Section& section) {
    const ConfigKey key{nullptr, &section.config_key, {}, 0};
    templated_ = section.templated;
    nlohmann::json* node = &view_;
    std::string path;
    for (size_t i = 0; i < section.pointer.size(); i++) {
      const std::string& token = section.pointer[i];
      if (!node->is_object()) return std::nullopt;  // not an object in the plan: nothing to merge into
      auto it = node->find(token);
      if (it == node->end()) {
        // Create the missing parents with one add of the whole subtree.
        auto value = expand(section.values, key);
        if (!value) return error_;
        if (value->empty()) return std::nullopt;
        for (size_t j = section.pointer.size(); j-- > i + 1;) *value = nlohmann::json{{section.pointer[j], *value}};
        add(path + "/" + escape_token(token), node, token, std::move(*value));
        return std::nullopt;
      }
      path += "/" + escape_token(token);
      node = &*it;
    }
    return merge_into(*node, path, section.values, key);
  }

  nlohmann::json take_patches() { return std::move(patches_); }

 private:
  std::optional<std::string> merge_into(nlohmann::json& node, const std::string& path, const nlohmann::json& values,
                                        const ConfigKey& key) {
    if (!node.is_object()) return std::nullopt;
    for (const auto& [k, v] : values.get_ref<const nlohmann::json::object_t&>()) {
      const ConfigKey child{&key, nullptr, k, 0};
      auto it = node.find(k);
      if (it != node.end()) {
        if (!it->is_object() || !v.is_object()) continue;  // the plan's value wins
        if (auto err = merge_into(*it, path + "/" + escape_token(k), v, child)) return err;
        continue;
      }
      auto value = expand(v, child);
      if (!value) return error_;
      add(path + "/" + escape_token(k), &node, k, std::move(*value));
    }
    return std::nullopt;
  }

  // `value` with templates expanded; nullopt (and error_) on a missing variable.
  std::optional<nlohmann::json> expand(const nlohmann::json& value, const ConfigKey& key) {
    if (!templated_) return value;  // a section without a brace: nothing to expand
    if (value.is_string()) {
      const std::string& text = value.get_ref<const std::string&>();
      if (text.find_first_of("{}") == std::string::npos) return value;  // no variable, no "{{" or "}}"
      auto s = expand_template(text, sandbox_);
      if (!s) {
        error_ = key.str() + ": " + s.error();
        return std::nullopt;
      }
      return nlohmann::json(std::move(s.value()));
    }
    if (value.is_object()) {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [k, v] : value.get_ref<const nlohmann::json::object_t&>()) {
        auto e = expand(v, ConfigKey{&key, nullptr, k, 0});
        if (!e) return std::nullopt;
        out[k] = std::move(*e);
      }
      return out;
    }
    if (value.is_array()) {
      nlohmann::json out = nlohmann::json::array();
      for (size_t i = 0; i < value.size(); i++) {
        auto e = expand(value[i], ConfigKey{&key, nullptr, {}, i});
        if (!e) return std::nullopt;
        out.push_back(std::move(*e));
      }
      return out;
    }
    return value;
  }

  // Records the add and applies it to the view, so later sections see the
  // parents it created.
  void add(std::string path, nlohmann::json* parent, const std::string& key, nlohmann::json value) {
    // Later sections may descend into an object this creates; a leaf they
    // only see as taken (null is, to merge_into, as any non-object).
    (*parent)[key] = skeleton(value);
    nlohmann::json op(nlohmann::json::value_t::object);
    auto& members = op.get_ref<nlohmann::json::object_t&>();
    members.emplace("op", "add");
    members.emplace("path", std::move(path));
    members.emplace("value", std::move(value));
    patches_.get_ref<nlohmann::json::array_t&>().push_back(std::move(op));
  }

  // The objects of `value` with every other value null: what merge_into
  // looks at, without copying the strings and lists.
  static nlohmann::json skeleton(const nlohmann::json& value) {
    if (!value.is_object()) return nullptr;
    nlohmann::json out(nlohmann::json::value_t::object);
    auto& members = out.get_ref<nlohmann::json::object_t&>();
    for (const auto& [k, v] : value.get_ref<const nlohmann::json::object_t&>()) members.emplace(k, skeleton(v));
    return out;
  }

  const computepb::DriverSandbox& sandbox_;
  nlohmann::json view_;
  nlohmann::json patches_ = nlohmann::json::array();  // answered as HookOutcome::patch_json
  std::string error_;
  bool templated_ = true;
};

class DefaultsHook : public SyncBuiltinHook {
 public:
  DefaultsHook(std::string name, std::vector<Section> sections, nlohmann::json environment, std::string env_key)
      : SyncBuiltinHook(std::move(name), kKind, kPhases),
        sections_(std::move(sections)),
        environment_(std::move(environment)),
        env_key_(std::move(env_key)) {
    for (auto& section : sections_) {
      section.templated = has_braces(section.values);
      reached_.push_back(section.pointer);
    }
    reached_.push_back(kEnvironment);
  }

 protected:
  HookOutcome evaluate(const hookpb::HookRequest& request) override {
    if (!is_phase(request, HookPhase::kPrepare)) return HookOutcome::answered(allow_response());
    const auto& sandbox = request.sandbox();
    Patcher patcher(sandbox, sandbox_json_along(sandbox, reached_));
    for (const auto& section : sections_) {
      if (auto err = patcher.merge(section)) return HookOutcome::failed(grpc::StatusCode::INVALID_ARGUMENT, *err);
    }
    if (auto env = missing_environment(sandbox); !env.empty()) {
      if (auto err = patcher.merge({kEnvironment, env_key_, std::move(env)})) {
        return HookOutcome::failed(grpc::StatusCode::INVALID_ARGUMENT, *err);
      }
    }
    HookOutcome outcome = HookOutcome::answered(allow_response());
    if (nlohmann::json patches = patcher.take_patches(); !patches.empty()) outcome.patch_json = std::move(patches);
    return outcome;
  }

 private:
  // A variable set in either environment map (the template's or the
  // sandbox's own) is the caller's: the default goes to spec.environment
  // only when neither has it.
  nlohmann::json missing_environment(const computepb::DriverSandbox& sandbox) const {
    nlohmann::json out = nlohmann::json::object();
    const auto& spec_env = sandbox.spec().environment();
    const auto& tmpl_env = sandbox.spec().template_().environment();
    for (const auto& [k, v] : environment_.get_ref<const nlohmann::json::object_t&>()) {
      if (spec_env.count(k) == 0 && tmpl_env.count(k) == 0) out[k] = v;
    }
    return out;
  }

  std::vector<Section> sections_;
  std::vector<std::vector<std::string>> reached_;  // every section's pointer: what the hook reads of the plan
  nlohmann::json environment_;
  std::string env_key_;
};

// Every string in `value` must be a valid template.
void check_templates(const nlohmann::json& value, const std::string& key, std::vector<std::string>& errors) {
  if (value.is_string()) {
    if (auto err = check_template(value.get<std::string>())) errors.push_back(key + ": " + *err);
  } else if (value.is_object()) {
    for (const auto& [k, v] : value.items()) check_templates(v, key + "." + k, errors);
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); i++) check_templates(value[i], key + "[" + std::to_string(i) + "]", errors);
  }
}

// labels or environment: a string table, no driver-owned key.
nlohmann::json read_string_map(TomlSection& config, std::string_view name, std::string_view owned_prefix,
                               std::string_view what, std::vector<std::string>& errors) {
  nlohmann::json out = nlohmann::json::object();
  auto table = config.string_table(name);
  if (!table) return out;
  for (const auto& [k, v] : *table) {
    std::string key = config.full_key(name) + "." + k;
    if (k.empty()) {
      errors.push_back(config.full_key(name) + ": empty " + std::string(what) + " name");
    } else if (k.compare(0, owned_prefix.size(), owned_prefix) == 0) {
      errors.push_back(key + ": " + std::string(what) + "s starting with " + std::string(owned_prefix) +
                       " are driver-owned; a hook may not set them");
    } else {
      out[k] = v;
    }
  }
  check_templates(out, config.full_key(name), errors);
  return out;
}

Result<std::unique_ptr<Hook>> make_defaults(const HookSpec& spec, const BuiltinContext&) {
  std::vector<std::string> errors;
  TomlSection config(config_table(spec), spec.config_key, errors);
  config.allow_only({"labels", "environment", "driver_config"});
  std::vector<Section> sections;
  auto labels = read_string_map(config, "labels", "openshell.", "label", errors);
  if (!labels.empty()) sections.push_back({{"spec", "template", "labels"}, config.full_key("labels"), labels});
  auto environment = read_string_map(config, "environment", "OPENSHELL_", "environment variable", errors);
  if (const toml::node* dc = config_table(spec).get("driver_config")) {
    if (!dc->is_table()) {
      errors.push_back(config.full_key("driver_config") + ": must be a table (the base driver's block)");
    } else {
      auto value = toml_to_json(*dc, config.full_key("driver_config"), &errors);
      check_templates(value, config.full_key("driver_config"), errors);
      if (!value.empty()) {
        sections.push_back({{"spec", "template", "driver_config"}, config.full_key("driver_config"), value});
      }
    }
  }
  if (!errors.empty()) return config_error(errors);
  return std::unique_ptr<Hook>(
      new DefaultsHook(spec.name, std::move(sections), std::move(environment), config.full_key("environment")));
}

}  // namespace

BuiltinKind defaults_builtin() {
  return {kKind, kPhases, &make_defaults};
}

}  // namespace owrap
