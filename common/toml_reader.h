// One shared way to read TOML configuration: every component reads its own
// table through a TomlSection, and every error names the full key
// ("delegate.ready_timeout_ms: ...", "hooks[2].timeout_ms: ..."). A
// section's accepted keys are declared once (allow_only), and arrays of
// tables ([[hooks]]) are read like any other table.
#pragma once

#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

// A TOML value as JSON. Dates and times have no JSON form: each is an error
// naming its key (`key`, `key.sub`, `key[2]`) in `errors`, or, when `errors`
// is null, a string of its TOML text.
nlohmann::json toml_to_json(const toml::node& node, const std::string& key, std::vector<std::string>* errors);

class TomlSection {
 public:
  // `path` is the table's own key ("" for the document root); errors are
  // appended to `errors`, which must outlive the section.
  TomlSection(const toml::table& table, std::string path, std::vector<std::string>& errors)
      : table_(&table), path_(std::move(path)), errors_(&errors) {}

  const std::string& path() const { return path_; }
  // The full key of `key` in this table.
  std::string full_key(std::string_view key) const;
  void error(std::string_view key, const std::string& message);
  // Every key not in `keys` is an error naming it.
  void allow_only(const std::vector<std::string>& keys);
  bool has(std::string_view key) const { return table_->contains(key); }
  // The raw value, for keys that take more than one shape; null if absent.
  const toml::node* node(std::string_view key) const { return table_->get(key); }
  const toml::table& raw() const { return *table_; }

  std::optional<std::string> string(std::string_view key);
  std::optional<bool> boolean(std::string_view key);
  // An integer within [min, max]; out of range is an error (a huge duration
  // would otherwise wrap around in arithmetic downstream).
  std::optional<int64_t> integer(std::string_view key, int64_t min, int64_t max);
  std::optional<std::chrono::milliseconds> millis(std::string_view key, int64_t min, int64_t max);
  std::optional<std::vector<std::string>> strings(std::string_view key);
  std::optional<std::map<std::string, std::string>> string_table(std::string_view key);
  // A sub-table; absent is nullopt, anything else than a table an error.
  std::optional<TomlSection> table(std::string_view key);
  // An array of tables ([[key]]), each named key[i].
  std::vector<TomlSection> tables(std::string_view key);

 private:
  const toml::table* table_;
  std::string path_;
  std::vector<std::string>* errors_;
};

}  // namespace owrap
