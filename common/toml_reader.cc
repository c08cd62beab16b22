#include "common/toml_reader.h"

#include <sstream>

#include <algorithm>

namespace owrap {

std::string TomlSection::full_key(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

void TomlSection::error(std::string_view key, const std::string& message) {
  errors_->push_back((key.empty() ? path_ : full_key(key)) + ": " + message);
}

void TomlSection::allow_only(const std::vector<std::string>& keys) {
  for (const auto& [k, _] : *table_) {
    if (std::find(keys.begin(), keys.end(), k.str()) == keys.end()) error(k.str(), "unknown key");
  }
}

std::optional<std::string> TomlSection::string(std::string_view key) {
  const toml::node* n = table_->get(key);
  if (n == nullptr) return std::nullopt;
  if (auto v = n->value<std::string>(); v && n->is_string()) return *v;
  error(key, "must be a string");
  return std::nullopt;
}

std::optional<bool> TomlSection::boolean(std::string_view key) {
  const toml::node* n = table_->get(key);
  if (n == nullptr) return std::nullopt;
  if (auto v = n->value<bool>(); v && n->is_boolean()) return *v;
  error(key, "must be a boolean");
  return std::nullopt;
}

std::optional<int64_t> TomlSection::integer(std::string_view key, int64_t min, int64_t max) {
  const toml::node* n = table_->get(key);
  if (n == nullptr) return std::nullopt;
  auto v = n->is_integer() ? n->value<int64_t>() : std::nullopt;
  if (!v) {
    error(key, "must be an integer");
    return std::nullopt;
  }
  if (*v < min || *v > max) {
    error(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return std::nullopt;
  }
  return v;
}

std::optional<std::chrono::milliseconds> TomlSection::millis(std::string_view key, int64_t min, int64_t max) {
  auto v = integer(key, min, max);
  if (!v) return std::nullopt;
  return std::chrono::milliseconds(*v);
}

std::optional<std::vector<std::string>> TomlSection::strings(std::string_view key) {
  const toml::node* n = table_->get(key);
  if (n == nullptr) return std::nullopt;
  const toml::array* arr = n->as_array();
  if (arr == nullptr) {
    error(key, "must be an array of strings");
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (size_t i = 0; i < arr->size(); i++) {
    if (auto s = (*arr)[i].value<std::string>(); s && (*arr)[i].is_string()) {
      out.push_back(*s);
    } else {
      error(std::string(key) + "[" + std::to_string(i) + "]", "must be a string");
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::map<std::string, std::string>> TomlSection::string_table(std::string_view key) {
  const toml::node* n = table_->get(key);
  if (n == nullptr) return std::nullopt;
  const toml::table* t = n->as_table();
  if (t == nullptr) {
    error(key, "must be a table of strings");
    return std::nullopt;
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : *t) {
    if (auto s = v.value<std::string>(); s && v.is_string())
      out[std::string(k.str())] = *s;
    else
      error(std::string(key) + "." + std::string(k.str()), "must be a string");
  }
  return out;
}

std::optional<TomlSection> TomlSection::table(std::string_view key) {
  const toml::node* n = table_->get(key);
  if (n == nullptr) return std::nullopt;
  if (const toml::table* t = n->as_table()) return TomlSection(*t, full_key(key), *errors_);
  error(key, "must be a table");
  return std::nullopt;
}

std::vector<TomlSection> TomlSection::tables(std::string_view key) {
  std::vector<TomlSection> out;
  const toml::node* n = table_->get(key);
  if (n == nullptr) return out;
  const toml::array* arr = n->as_array();
  if (arr == nullptr || !arr->is_array_of_tables()) {
    error(key, "must be an array of tables ([[" + full_key(key) + "]])");
    return out;
  }
  for (size_t i = 0; i < arr->size(); i++) {
    out.emplace_back(*(*arr)[i].as_table(), full_key(key) + "[" + std::to_string(i) + "]", *errors_);
  }
  return out;
}

nlohmann::json toml_to_json(const toml::node& node, const std::string& key, std::vector<std::string>* errors) {
  if (const auto* t = node.as_table()) {
    nlohmann::json obj = nlohmann::json::object();
    for (const auto& [k, v] : *t) obj[std::string(k.str())] = toml_to_json(v, key + "." + std::string(k.str()), errors);
    return obj;
  }
  if (const auto* a = node.as_array()) {
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < a->size(); i++)
      arr.push_back(toml_to_json((*a)[i], key + "[" + std::to_string(i) + "]", errors));
    return arr;
  }
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) return f->get();
  if (const auto* b = node.as_boolean()) return b->get();
  if (errors) {
    errors->push_back(key + ": dates and times are not supported (use a string)");
    return nullptr;
  }
  std::ostringstream text;
  node.visit([&text](const auto& value) {
    if constexpr (toml::is_date<decltype(value)> || toml::is_time<decltype(value)> ||
                  toml::is_date_time<decltype(value)>) {
      text << value;
    }
  });
  return text.str();
}

}  // namespace owrap
