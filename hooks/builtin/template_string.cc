#include "hooks/builtin/template_string.h"

#include <array>

namespace owrap {

namespace {

constexpr std::string_view kLabelsPrefix = "labels.";
constexpr std::array<std::string_view, 4> kFixedVariables = {"sandbox.id", "sandbox.name", "sandbox.namespace",
                                                             "template.image"};

bool known_variable(std::string_view name) {
  if (name.substr(0, kLabelsPrefix.size()) == kLabelsPrefix) return name.size() > kLabelsPrefix.size();
  for (auto v : kFixedVariables) {
    if (v == name) return true;
  }
  return false;
}

// Walks `text`, handing literal runs and variable names to the callbacks;
// an error message on malformed syntax or an unknown variable.
template <class Literal, class Variable>
std::optional<std::string> walk(std::string_view text, const Literal& literal, const Variable& variable) {
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '}') {
      if (i + 1 < text.size() && text[i + 1] == '}') {
        literal("}");
        i += 2;
        continue;
      }
      return "unmatched \"}\" at offset " + std::to_string(i) + " (write \"}}\" for a literal brace)";
    }
    if (c != '{') {
      size_t next = text.find_first_of("{}", i);
      if (next == std::string_view::npos) next = text.size();
      literal(text.substr(i, next - i));
      i = next;
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '{') {
      literal("{");
      i += 2;
      continue;
    }
    size_t close = text.find('}', i);
    if (close == std::string_view::npos) {
      return "unterminated \"{\" at offset " + std::to_string(i) + " (write \"{{\" for a literal brace)";
    }
    std::string_view name = text.substr(i + 1, close - i - 1);
    if (!known_variable(name)) {
      return "unknown template variable {" + std::string(name) +
             "} (known: {sandbox.id}, {sandbox.name}, {sandbox.namespace}, {template.image}, {labels.<key>})";
    }
    if (!variable(name)) return std::nullopt;
    i = close + 1;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> check_template(std::string_view text) {
  return walk(
      text, [](std::string_view) {}, [](std::string_view) { return true; });
}

// The sandbox's value of one variable, nullptr when unset or empty; not
// copied: a template is expanded against one sandbox at a time.
static const std::string* variable_value(const openshell::compute::v1::DriverSandbox& sandbox, std::string_view name) {
  const std::string* value = nullptr;
  if (name == "sandbox.id") {
    value = &sandbox.id();
  } else if (name == "sandbox.name") {
    value = &sandbox.name();
  } else if (name == "sandbox.namespace") {
    value = &sandbox.namespace_();
  } else if (name == "template.image") {
    value = &sandbox.spec().template_().image();
  } else if (name.substr(0, kLabelsPrefix.size()) == kLabelsPrefix) {
    const auto& labels = sandbox.spec().template_().labels();
    auto it = labels.find(std::string(name.substr(kLabelsPrefix.size())));
    if (it != labels.end()) value = &it->second;
  }
  return value && !value->empty() ? value : nullptr;
}

std::optional<std::string> template_variable(const openshell::compute::v1::DriverSandbox& sandbox,
                                             std::string_view name) {
  const std::string* value = variable_value(sandbox, name);
  return value ? std::optional<std::string>(*value) : std::nullopt;
}

Result<std::string> expand_template(std::string_view text, const openshell::compute::v1::DriverSandbox& sandbox) {
  std::string out;
  std::string_view missing;
  auto err = walk(
      text, [&](std::string_view lit) { out += lit; },
      [&](std::string_view name) {
        const std::string* value = variable_value(sandbox, name);
        if (!value) {
          missing = name;
          return false;
        }
        out += *value;
        return true;
      });
  if (err) return Error{*err};
  if (!missing.empty()) return Error{"template variable {" + std::string(missing) + "} is not set on this sandbox"};
  return out;
}

}  // namespace owrap
