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

// Where in the plan a group of defaults merges.
enum class Place { kLabels, kDriverConfig, kEnvironment };

// A path being walked, as tokens and as its JSON pointer at once.
struct Where {
  PathTokens tokens;
  std::string text;

  Where(const PathTokens& tokens, const std::string& text) : tokens(tokens), text(text) {}
  void push(const std::string& token) {
    tokens.push_back(token);
    text += '/';
    append_escaped(text, token);
  }
  void pop() {
    tokens.pop_back();
    text.resize(text.rfind('/'));  // an escaped token has no slash
  }
};

// One group of defaults merged at one place in the plan.
struct Section {
  Place place;
  PathTokens pointer;        // the place's reference tokens, unescaped
  std::string config_key;    // "hooks[0].config.labels"
  nlohmann::json values;     // an object; strings are templates
  bool templated = true;     // some string in `values` has a brace: expand() must look
  std::string pointer_text;  // `pointer` as a JSON pointer
  // A string map's: where each of `values`' members goes, in their order.
  std::vector<Where> members;
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

// Builds one call's patch set. It reads the plan's message itself, as the
// hook protocol's JSON view would show it (an empty map or an absent
// message is no member; a Struct member without a kind is none either), and
// remembers the parents its own adds create, so a later section adds inside
// them. Values that need no expanding are pointed at, not copied: the hook's
// configuration outlives the patch set.
class Patcher {
 public:
  explicit Patcher(const computepb::DriverSandbox& sandbox) : sandbox_(sandbox), spec_(sandbox.spec()) {
    patches_.reserve(8);
  }

  // Adds `section`'s missing values; an error names the config key.
  std::optional<std::string> merge(const Section& section) {
    const ConfigKey key{nullptr, &section.config_key, {}, 0};
    templated_ = section.templated;
    const size_t existing = existing_tokens(section.place);
    if (existing < section.pointer.size()) return add_parents(section, existing, section.values, key, true);
    if (section.place == Place::kDriverConfig) {
      Where path(section.pointer, section.pointer_text);
      return merge_struct(spec_.template_().driver_config(), path, section.values, key);
    }
    return merge_strings(spec_.template_().labels(), nullptr, section, key);
  }

  // The environment's defaults: a variable set in either environment map
  // (the template's or the sandbox's own) is the caller's, so the default
  // goes to spec.environment only when neither has it.
  std::optional<std::string> merge_environment(const Section& section) {
    const ConfigKey key{nullptr, &section.config_key, {}, 0};
    templated_ = section.templated;
    const auto& tmpl_env = spec_.template_().environment();
    if (existing_tokens(Place::kEnvironment) == section.pointer.size()) {
      return merge_strings(spec_.environment(), &tmpl_env, section, key);
    }
    nlohmann::json missing = nlohmann::json::object();
    for (const auto& [k, v] : section.values.get_ref<const nlohmann::json::object_t&>()) {
      if (tmpl_env.count(k) == 0) missing.emplace(k, v);
    }
    if (missing.empty()) return std::nullopt;
    return add_parents(section, existing_tokens(Place::kEnvironment), missing, key, false);
  }

  PreparedPatches take_patches() { return std::move(patches_); }

 private:
  // How many tokens of `place`'s pointer name something in the plan.
  size_t existing_tokens(Place place) const {
    if (!sandbox_.has_spec() && !created_spec_) return 0;
    if (place == Place::kEnvironment) return spec_.environment().empty() ? 1 : 2;
    if (!spec_.has_template_() && !created_template_) return 1;
    if (place == Place::kLabels) return spec_.template_().labels().empty() ? 2 : 3;
    return spec_.template_().has_driver_config() ? 3 : 2;
  }

  // One add of the whole subtree at the first missing token.
  // `values` are the section's own when `lasting` (pointed at if they need
  // neither expanding nor wrapping in parents).
  std::optional<std::string> add_parents(const Section& section, size_t existing, const nlohmann::json& values,
                                         const ConfigKey& key, bool lasting) {
    if (values.empty()) return std::nullopt;
    if (existing == 0) created_spec_ = true;
    if (existing <= 1 && section.pointer.size() > 2) created_template_ = true;  // through spec.template
    PathTokens path(section.pointer.begin(), section.pointer.begin() + static_cast<std::ptrdiff_t>(existing + 1));
    if (lasting && path.size() == section.pointer.size() && !needs_expanding(values)) {
      patches_.push_back(prepared_add(std::move(path), &values));
      return std::nullopt;
    }
    auto value = expand(values, key);
    if (!value) return error_;
    for (size_t j = section.pointer.size(); j-- > existing + 1;) *value = nlohmann::json{{section.pointer[j], *value}};
    patches_.push_back(prepared_add(std::move(path), nullptr, std::move(*value)));
    return std::nullopt;
  }

  // A string map that exists: each missing key is one add; a key `also`
  // has counts as set.
  std::optional<std::string> merge_strings(const google::protobuf::Map<std::string, std::string>& map,
                                           const google::protobuf::Map<std::string, std::string>* also,
                                           const Section& section, const ConfigKey& key) {
    size_t i = 0;
    for (const auto& [k, v] : section.values.get_ref<const nlohmann::json::object_t&>()) {
      const Where& at = section.members[i++];
      if (map.count(k) != 0 || (also && also->count(k) != 0)) continue;  // the plan's value wins
      if (auto err = add_at(at, v, ConfigKey{&key, nullptr, k, 0})) return err;
    }
    return std::nullopt;
  }

  // A Struct: objects deep-merge; any other value the plan has wins.
  std::optional<std::string> merge_struct(const google::protobuf::Struct& node, Where& path,
                                          const nlohmann::json& values, const ConfigKey& key) {
    for (const auto& [k, v] : values.get_ref<const nlohmann::json::object_t&>()) {
      const ConfigKey child{&key, nullptr, k, 0};
      auto it = node.fields().find(k);
      if (it == node.fields().end() || it->second.kind_case() == google::protobuf::Value::KIND_NOT_SET) {
        if (auto err = add(path, k, v, child)) return err;
        continue;
      }
      if (it->second.kind_case() != google::protobuf::Value::kStructValue || !v.is_object()) continue;
      path.push(k);
      auto err = merge_struct(it->second.struct_value(), path, v, child);
      path.pop();
      if (err) return err;
    }
    return std::nullopt;
  }

  // The add of `value` (the configuration's) at `path` + `member`.
  std::optional<std::string> add(const Where& path, const std::string& member, const nlohmann::json& value,
                                 const ConfigKey& key) {
    Where at = path;
    at.push(member);
    return add_at(at, value, key);
  }

  // The add of `value` (the configuration's) at `at`.
  std::optional<std::string> add_at(const Where& at, const nlohmann::json& value, const ConfigKey& key) {
    if (!needs_expanding(value)) {  // nothing copied
      patches_.push_back(prepared_add(at.tokens, at.text, &value));
      return std::nullopt;
    }
    auto expanded = expand(value, key);
    if (!expanded) return error_;
    patches_.push_back(prepared_add(at.tokens, at.text, nullptr, std::move(*expanded)));
    return std::nullopt;
  }

  bool needs_expanding(const nlohmann::json& value) const { return templated_ && has_braces(value); }

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

  const computepb::DriverSandbox& sandbox_;
  const computepb::DriverSandboxSpec& spec_;  // the default instance when the plan has none
  bool created_spec_ = false;                 // this set adds /spec ...
  bool created_template_ = false;             // ... or /spec/template
  PreparedPatches patches_;                   // answered as HookOutcome::prepared
  std::string error_;
  bool templated_ = true;
};

class DefaultsHook : public SyncBuiltinHook {
 public:
  DefaultsHook(std::string name, std::vector<Section> sections, std::optional<Section> environment)
      : SyncBuiltinHook(std::move(name), kKind, kPhases),
        sections_(std::move(sections)),
        environment_(std::move(environment)) {
    for (auto& section : sections_) prepare(section);
    if (environment_) prepare(*environment_);
  }

 protected:
  HookOutcome evaluate(const hookpb::HookRequest& request) override {
    if (!is_phase(request, HookPhase::kPrepare)) return HookOutcome::answered(allow_response());
    Patcher patcher(request.sandbox());
    for (const auto& section : sections_) {
      if (auto err = patcher.merge(section)) return HookOutcome::failed(grpc::StatusCode::INVALID_ARGUMENT, *err);
    }
    if (environment_) {
      if (auto err = patcher.merge_environment(*environment_)) {
        return HookOutcome::failed(grpc::StatusCode::INVALID_ARGUMENT, *err);
      }
    }
    HookOutcome outcome = HookOutcome::answered(allow_response());
    if (PreparedPatches patches = patcher.take_patches(); !patches.empty()) outcome.prepared = std::move(patches);
    return outcome;
  }

 private:
  static void prepare(Section& section) {
    section.templated = has_braces(section.values);
    section.pointer_text = to_pointer(section.pointer);
    if (section.place == Place::kDriverConfig) return;
    for (const auto& [k, v] : section.values.get_ref<const nlohmann::json::object_t&>()) {
      section.members.emplace_back(section.pointer, section.pointer_text);
      section.members.back().push(k);
    }
  }

  std::vector<Section> sections_;  // labels, driver_config: merged in this order
  std::optional<Section> environment_;
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
  if (!labels.empty()) {
    sections.push_back({Place::kLabels, {"spec", "template", "labels"}, config.full_key("labels"), labels});
  }
  auto environment = read_string_map(config, "environment", "OPENSHELL_", "environment variable", errors);
  if (const toml::node* dc = config_table(spec).get("driver_config")) {
    if (!dc->is_table()) {
      errors.push_back(config.full_key("driver_config") + ": must be a table (the base driver's block)");
    } else {
      auto value = toml_to_json(*dc, config.full_key("driver_config"), &errors);
      check_templates(value, config.full_key("driver_config"), errors);
      if (!value.empty()) {
        sections.push_back(
            {Place::kDriverConfig, {"spec", "template", "driver_config"}, config.full_key("driver_config"), value});
      }
    }
  }
  if (!errors.empty()) return config_error(errors);
  std::optional<Section> env;
  if (!environment.empty()) {
    env = Section{Place::kEnvironment, {"spec", "environment"}, config.full_key("environment"), std::move(environment)};
  }
  return std::unique_ptr<Hook>(new DefaultsHook(spec.name, std::move(sections), std::move(env)));
}

}  // namespace

BuiltinKind defaults_builtin() {
  return {kKind, kPhases, &make_defaults};
}

}  // namespace owrap
