#include "plan/owners.h"

#include <charconv>
#include <vector>

namespace owrap {

using nlohmann::json;

namespace {

bool has_prefix(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// `owned` lies beneath `pointer`: it starts with `pointer` and a slash.
bool is_below(std::string_view owned, std::string_view pointer) {
  return owned.size() > pointer.size() && owned[pointer.size()] == '/' && has_prefix(owned, pointer);
}

std::optional<size_t> index_of(std::string_view token) {
  size_t value = 0;
  auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec != std::errc() || end != token.data() + token.size()) return std::nullopt;
  return value;
}

}  // namespace

std::optional<OwnerConflict> PathOwners::conflict(std::string_view pointer, const std::string& hook) const {
  if (owners_.empty()) return std::nullopt;  // the first hook to patch
  auto owned_by_other = [&](std::string_view at) -> std::optional<OwnerConflict> {
    auto it = owners_.find(at);
    if (it != owners_.end() && it->second != hook) return OwnerConflict{it->first, it->second};
    return std::nullopt;
  };
  // Above: a hook that set a whole array or an empty object owns what is
  // put inside it. Each ancestor's pointer is a prefix of `pointer` ending
  // before one of its slashes ("" is the whole plan).
  for (size_t slash = 0; slash != std::string_view::npos; slash = pointer.find('/', slash + 1)) {
    if (auto c = owned_by_other(pointer.substr(0, slash))) return c;
  }
  if (auto c = owned_by_other(pointer)) return c;
  for (auto it = first_below(pointer); it != owners_.end() && is_below(it->first, pointer); ++it) {
    if (it->second != hook) return OwnerConflict{it->first, it->second};
  }
  return std::nullopt;
}

// "/a/..." is one range of the sorted map, after the keys "/a" followed by
// a character that sorts before '/' ("/a-b", "/a.b"), which are skipped.
OwnerMap::const_iterator PathOwners::first_below(std::string_view pointer) const {
  auto it = owners_.upper_bound(pointer);
  while (it != owners_.end() && has_prefix(it->first, pointer) && it->first.size() > pointer.size() &&
         static_cast<unsigned char>(it->first[pointer.size()]) < '/') {
    ++it;
  }
  return it;
}

void PathOwners::erase_at_and_below(const std::string& pointer) {
  if (owners_.empty()) return;
  owners_.erase(pointer);
  auto it = first_below(pointer);
  while (it != owners_.end() && is_below(it->first, pointer)) it = owners_.erase(it);
}

void PathOwners::claim_set(std::string pointer, const json& value, const std::string& hook) {
  erase_at_and_below(pointer);
  claim_leaves(pointer, value, hook);
}

// `pointer` has nothing owned at or below it.
void PathOwners::claim_leaves(std::string& pointer, const json& value, const std::string& hook) {
  if (!value.is_object() || value.empty()) {
    owners_.emplace(pointer, hook);
    return;
  }
  const size_t length = pointer.size();
  for (const auto& [key, item] : value.get_ref<const json::object_t&>()) {
    pointer += '/';
    append_escaped(pointer, key);
    claim_leaves(pointer, item, hook);
    pointer.resize(length);
  }
}

void PathOwners::claim_removal(const PathTokens& path, const std::string& hook) {
  erase_at_and_below(to_pointer(path));
  owners_[to_pointer(path)] = hook;
}

void PathOwners::shift(const PathTokens& array, size_t index, int delta) {
  const std::string base = to_pointer(array) + "/";
  std::vector<std::pair<std::string, std::string>> moved;
  for (auto it = owners_.lower_bound(base); it != owners_.end() && has_prefix(it->first, base);) {
    std::string rest = it->first.substr(base.size());
    size_t slash = rest.find('/');
    auto at = index_of(std::string_view(rest).substr(0, slash));
    if (!at || *at < index) {
      ++it;
      continue;
    }
    if (delta < 0 && *at == index) {  // the removed element
      it = owners_.erase(it);
      continue;
    }
    std::string tail = slash == std::string::npos ? "" : rest.substr(slash);
    moved.emplace_back(base + std::to_string(*at + delta) + tail, it->second);
    it = owners_.erase(it);
  }
  for (auto& [pointer, hook] : moved) owners_[pointer] = hook;
}

}  // namespace owrap
