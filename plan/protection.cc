#include "plan/protection.h"

#include "common/secrets.h"

#include <mutex>
#include <shared_mutex>
#include <string_view>
#include <unordered_map>

namespace owrap {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

const std::vector<std::string>& driver_owned_patterns() {
  static const std::vector<std::string> patterns = {
      "/id",
      "/name",
      "/workspace",
      "/status",
      "/spec/sandbox_token",
      "/spec/environment/OPENSHELL_*",
      "/spec/template/environment/OPENSHELL_*",
      "/spec/template/platform_config",
      "/spec/template/labels/openshell.ai~1managed-by",
      "/spec/template/labels/openshell.ai~1sandbox-id",
      "/spec/template/labels/openshell.ai~1sandbox-name",
      "/spec/template/labels/openshell.ai~1sandbox-namespace",
      "/spec/template/labels/openshell.ai~1sandbox-workspace",
      "/spec/template/labels/openshell.ai~1gateway-id",
      "/spec/template/labels/openshell.managed",
      "/spec/template/labels/openshell.io~1sandbox-id",
  };
  return patterns;
}

namespace {

// Types whose JSON form is not their fields (a Struct is a free object).
bool free_form(const Descriptor& type) {
  return type.well_known_type() != Descriptor::WELLKNOWNTYPE_UNSPECIFIED;
}

// The message type of one element of a repeated or map field (null: scalar).
const Descriptor* element_type(const FieldDescriptor& field) {
  return field.is_map() ? field.message_type()->map_value()->message_type() : field.message_type();
}

bool may_hold(const Descriptor* type) {
  return type && !free_form(*type) && may_hold_secrets(*type);
}

}  // namespace

SchemaSpot schema_spot(const Descriptor& root, const PathTokens& path) {
  const Descriptor* type = &root;
  const FieldDescriptor* container = nullptr;  // a repeated or map field whose element token comes next
  for (size_t i = 0; i < path.size(); i++) {
    if (container) {
      type = element_type(*container);
      container = nullptr;
      continue;
    }
    if (!type || free_form(*type)) return {};
    const FieldDescriptor* field = type->FindFieldByName(path[i]);
    if (!field) return {};
    if (is_secret_field(*field)) return {to_pointer(PathTokens(path.begin(), path.begin() + i + 1)), true};
    if (field->is_repeated()) {
      container = field;
      type = nullptr;
    } else {
      type = field->message_type();
    }
  }
  return {"", may_hold(container ? element_type(*container) : type)};
}

namespace {

struct TokensHash {
  size_t operator()(const PathTokens& path) const {
    size_t h = path.size();
    for (const auto& token : path) h = h * 1000003 ^ std::hash<std::string_view>{}(token);
    return h;
  }
};

}  // namespace

struct Protection::Memo {
  // A hook that sends ever new paths fills it once; past the bound paths
  // are judged every time, as before there was a memo.
  static constexpr size_t kMaxPaths = 1024;

  template <class Judge>
  Protection::Verdicts remember(const PathTokens& path, Judge judge) {
    {
      std::shared_lock lock(mutex);
      auto it = verdicts.find(path);
      if (it != verdicts.end()) return it->second;
    }
    Protection::Verdicts verdict = judge();
    std::unique_lock lock(mutex);
    if (verdicts.size() < kMaxPaths) verdicts.emplace(path, verdict);
    return verdict;
  }

  std::shared_mutex mutex;
  std::unordered_map<PathTokens, Protection::Verdicts, TokensHash> verdicts;
};

Result<Protection> Protection::make(const Descriptor& root, const std::vector<std::string>& extra) {
  Protection out;
  out.root_ = &root;
  out.memo_ = std::make_shared<Memo>();
  static const std::vector<Rule> contract = [] {
    std::vector<Rule> rules;
    for (const auto& text : driver_owned_patterns()) rules.push_back({PathPattern::parse(text).value(), false});
    return rules;
  }();
  out.rules_ = contract;
  for (const auto& text : extra) {
    auto pattern = PathPattern::parse(text);
    if (!pattern) return Error{"extra protected path: " + pattern.error()};
    out.rules_.push_back({std::move(pattern.value()), true});
  }
  return out;
}

Protection::Verdicts Protection::judge(const PathTokens& path) const {
  return memo_->remember(path, [&] { return Verdicts{judge_inside(path), judge_contains(path)}; });
}

std::string Protection::inside(const PathTokens& path) const {
  return judge(path).inside;
}

std::string Protection::contains(const PathTokens& path) const {
  return judge(path).contains;
}

std::string Protection::judge_inside(const PathTokens& path) const {
  // Most paths pass: the pointer text is made only for a refusal.
  for (const auto& rule : rules_) {
    if (!rule.pattern.covers(path)) continue;
    const std::string pointer = to_pointer(path);
    if (rule.operator_rule) return pointer + " is protected by the operator (\"" + rule.pattern.text() + "\")";
    if (rule.pattern.text() == pointer) return pointer + " is driver-owned";
    return pointer + " is driver-owned (\"" + rule.pattern.text() + "\")";
  }
  SchemaSpot spot = schema_spot(*root_, path);
  if (spot.secret.empty()) return "";
  const std::string pointer = to_pointer(path);
  if (spot.secret == pointer) return pointer + " is a secret field";
  return pointer + " lies inside the secret field " + spot.secret;
}

std::string Protection::judge_contains(const PathTokens& path) const {
  auto pointer = [&] { return path.empty() ? std::string("the whole sandbox") : to_pointer(path); };
  for (const auto& rule : rules_) {
    if (!rule.pattern.is_below(path)) continue;
    const char* whose = rule.operator_rule ? ", protected by the operator" : ", which is driver-owned";
    return pointer() + " contains \"" + rule.pattern.text() + "\"" + whose;
  }
  if (schema_spot(*root_, path).holds_secrets) return pointer() + " contains a secret field";
  return "";
}

}  // namespace owrap
