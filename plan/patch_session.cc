#include "plan/patch_session.h"

#include <functional>
#include <optional>

namespace owrap {

using nlohmann::json;

namespace {

bool is_one_of(const std::string& op, std::initializer_list<const char*> ops) {
  for (const char* candidate : ops) {
    if (op == candidate) return true;
  }
  return false;
}

PathTokens parent_of(const PathTokens& path) {
  return PathTokens(path.begin(), path.end() - 1);
}

PathTokens child_of(PathTokens path, std::string token) {
  path.push_back(std::move(token));
  return path;
}

// Calls `check` for every scalar or empty container beneath `value` (arrays
// too: an element may be a message with a secret); the first non-empty answer wins.
std::string first_leaf(const json& value, PathTokens& at, const std::function<std::string(const PathTokens&)>& check) {
  if (!value.is_structured() || value.empty()) return check(at);
  size_t i = 0;
  for (const auto& [key, item] : value.items()) {
    at.push_back(value.is_array() ? std::to_string(i++) : key);
    std::string why = first_leaf(item, at, check);
    at.pop_back();
    if (!why.empty()) return why;
  }
  return "";
}

// nlohmann's messages start with "[json.exception.out_of_range.403] ".
std::string without_tag(const std::string& what) {
  size_t end = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && end != std::string::npos ? what.substr(end + 2) : what;
}

// nlohmann's patch_inplace aborts the process (an assert) when the parent
// of an add's target is a string, number or boolean, and silently does
// nothing for such a remove: a hook's reply must never reach either.
std::string scalar_parent(const json& doc, const PathTokens& path) {
  if (path.empty()) return "";
  PathTokens parent_path = parent_of(path);
  const json* parent = find_at(doc, parent_path);
  if (!parent || parent->is_structured() || parent->is_null()) return "";
  return to_pointer(parent_path) + " is a " + parent->type_name() + ", not an object or array: it has no member \"" +
         path.back() + "\"";
}

}  // namespace

std::string patch_label(const PatchOp& op, size_t index) {
  if (op.raw) return patch_label(*op.raw, index);
  return "patch " + std::to_string(index) + " (" + op.op + " " + op.path_text + ")";
}

std::string patch_label(const json& raw, size_t index) {
  std::string out = "patch " + std::to_string(index);
  if (!raw.is_object()) return out;
  auto text = [&](const char* key) {
    auto it = raw.find(key);
    return it != raw.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  std::string op = text("op");
  if (op.empty()) return out;
  if (is_one_of(op, {"move", "copy"})) return out + " (" + op + " from " + text("from") + " to " + text("path") + ")";
  return out + " (" + op + " " + text("path") + ")";
}

const json* find_at(const json& doc, const PathTokens& path) {
  return find_at(doc, path, path.size());
}

const json* find_at(const json& doc, const PathTokens& path, size_t count) {
  const json* at = &doc;
  for (size_t i = 0; i < count; i++) {
    const std::string& token = path[i];
    if (at->is_object()) {
      auto it = at->find(token);
      if (it == at->end()) return nullptr;
      at = &*it;
    } else if (at->is_array()) {
      auto i = array_index(token);
      if (!i || *i >= at->size()) return nullptr;
      at = &(*at)[*i];
    } else {
      return nullptr;
    }
  }
  return at;
}

bool is_patch_op(const json& raw, std::initializer_list<const char*> ops) {
  if (!raw.is_object()) return false;
  auto op = raw.find("op");
  auto path = raw.find("path");
  return op != raw.end() && op->is_string() && is_one_of(op->get_ref<const std::string&>(), ops) && path != raw.end() &&
         path->is_string() && !path->get_ref<const std::string&>().empty();
}

std::optional<json> JsonTarget::value_at(const PathTokens& path) const {
  const json* at = find_at(doc_, path);
  return at ? std::optional<json>(*at) : std::nullopt;
}

bool JsonTarget::has_member(const PathTokens& path) const {
  if (path.empty()) return false;
  const json* parent = find_at(doc_, path, path.size() - 1);
  return parent && parent->is_object() && parent->contains(path.back());
}

std::optional<size_t> JsonTarget::array_size(const PathTokens& path, size_t count) const {
  const json* at = find_at(doc_, path, count);
  return at && at->is_array() ? std::optional<size_t>(at->size()) : std::nullopt;
}

std::string PatchSession::apply(const json& raw, size_t index) {
  auto op = parse(raw);
  std::string why = op ? step(op.value()) : op.error();
  return why.empty() ? "" : patch_label(raw, index) + ": " + why;
}

std::string PatchSession::apply_all(const json& patches) {
  for (size_t i = 0; i < patches.size(); i++) {
    if (std::string why = apply(patches[i], i); !why.empty()) return why;
  }
  return "";
}

std::string PatchSession::apply_all(PreparedPatches& ops) {
  const size_t first_change = changes_.size();
  changes_.reserve(first_change + ops.size());
  size_t i = 0;
  try {
    for (; i < ops.size(); i++) {
      PatchOp& op = ops[i];
      if (op.op != "remove") op.value = &prepared_value(op);  // the set no longer moves
      if (std::string why = step(op); !why.empty()) return patch_label(op, i) + ": " + why;
    }
  } catch (...) {
    // The target gave up (MessageTarget::Unsure): the set is run again as
    // JSON, so the operations recorded so far get back what record() took.
    give_back(ops, first_change, i);
    throw;
  }
  return "";
}

void PatchSession::give_back(PreparedPatches& ops) {
  give_back(ops, changes_.size() - std::min(changes_.size(), ops.size()), ops.size());
}

void PatchSession::give_back(PreparedPatches& ops, size_t first_change, size_t count) {
  for (size_t j = 0; j < count && first_change + j < changes_.size(); j++) {
    const PlanChange& change = changes_[first_change + j];
    ops[j].path_text = change.path;
    ops[j].path = change.path_tokens;
  }
}

PatchOp prepared_add(PathTokens path, const json* value, json owned) {
  std::string pointer = to_pointer(path);
  return prepared_add(std::move(path), std::move(pointer), value, std::move(owned));
}

PatchOp prepared_add(PathTokens path, std::string pointer, const json* value, json owned) {
  PatchOp op;
  op.op = "add";
  op.path_text = std::move(pointer);
  op.path = std::move(path);
  op.source = std::move(owned);
  op.value = value;
  return op;
}

json prepared_to_json(const PreparedPatches& ops) {
  json out(json::value_t::array);
  auto& items = out.get_ref<json::array_t&>();
  items.reserve(ops.size());
  for (const PatchOp& op : ops) {
    json item(json::value_t::object);
    auto& members = item.get_ref<json::object_t&>();
    members.emplace("op", op.op);
    members.emplace("path", op.path_text);
    if (op.op != "remove") members.emplace("value", prepared_value(op));
    items.push_back(std::move(item));
  }
  return out;
}

Result<PatchOp> PatchSession::parse(const json& raw) const {
  if (!raw.is_object()) return Error{"an operation must be a JSON object"};
  auto text = [&](const char* key) -> const json* {
    auto it = raw.find(key);
    return it != raw.end() && it->is_string() ? &*it : nullptr;
  };
  PatchOp out{&raw, text("op") ? text("op")->get_ref<const std::string&>() : ""};
  if (!is_one_of(out.op, {"add", "remove", "replace", "move", "copy", "test"})) {
    return Error{"\"op\" must be one of add, remove, replace, move, copy, test"};
  }
  if (!text("path")) return Error{"\"path\" must be a JSON pointer string"};
  const std::string& path_text = text("path")->get_ref<const std::string&>();
  auto path = parse_pointer(path_text);
  if (!path) return Error{path.error()};
  out.path = std::move(path.value());
  out.path_text = path_text;
  if (is_one_of(out.op, {"move", "copy"})) {
    if (!text("from")) return Error{"\"" + out.op + "\" needs \"from\", a JSON pointer string"};
    auto from = parse_pointer(text("from")->get_ref<const std::string&>());
    if (!from) return Error{from.error()};
    out.from = std::move(from.value());
  } else if (out.op != "remove") {
    auto value = raw.find("value");
    if (value == raw.end()) return Error{"\"" + out.op + "\" needs a \"value\""};
    out.value = &*value;
  }
  return out;
}

std::string PatchSession::step(PatchOp& op) {
  if (op.op == "test") return target_.run(op);
  if (std::string why = guard(op); !why.empty()) return why;
  // Whether the operation lands in an array, and its length: asked once,
  // for the ownership check and the record (a replace needs neither).
  const std::optional<size_t> parent = op.op == "replace" ? std::nullopt : parent_array(op.path);
  if (std::string why = check_owners(op, parent); !why.empty()) return why;
  if (std::string why = target_.run(op); !why.empty()) return why;
  record(op, parent);
  return "";
}

std::string PatchSession::guard(PatchOp& op) const {
  auto whole = [&](const PathTokens& path) {
    Protection::Verdicts v = protection_.judge(path);
    return v.inside.empty() ? std::move(v.contains) : std::move(v.inside);
  };
  if (is_one_of(op.op, {"move", "copy"})) {
    if (std::string why = whole(op.from); !why.empty()) return why;
    auto source = target_.value_at(op.from);
    if (!source) return to_pointer(op.from) + " does not exist";
    op.source = std::move(*source);
    op.value = &op.source;
  }
  if (is_one_of(op.op, {"remove", "replace"})) return whole(op.path);
  return guard_add(op.path, *op.value);
}

// `add` writes a new member, inserts into an array, or replaces an existing
// member: the last is a replace and is judged as one.
std::string PatchSession::guard_add(const PathTokens& path, const json& value) const {
  Protection::Verdicts verdicts = protection_.judge(path);
  if (!verdicts.inside.empty()) return std::move(verdicts.inside);
  std::string why = std::move(verdicts.contains);
  if (why.empty()) return "";
  if (path.empty() || target_.has_member(path)) {
    return why + " (adding onto it replaces it)";
  }
  PathTokens at = path;
  return first_leaf(value, at, [&](const PathTokens& leaf) { return protection_.inside(leaf); });
}

// The size of the array `path` lies in, if it lies in one.
std::optional<size_t> PatchSession::parent_array(const PathTokens& path) const {
  if (path.empty()) return std::nullopt;
  return target_.array_size(path, path.size() - 1);
}

std::string PatchSession::check_owners(const PatchOp& op, std::optional<size_t> parent) const {
  if (may_override_) return "";
  if (op.op == "move") {
    if (std::string why = check_owner(op.raw->at("from").get_ref<const std::string&>()); !why.empty()) return why;
  }
  // Inserting into an array changes no one's element.
  if (is_one_of(op.op, {"add", "move", "copy"}) && parent) return "";
  return check_owner(op.path_text);
}

std::string PatchSession::check_owner(const std::string& pointer) const {
  auto conflict = owners_.conflict(pointer, hook_);
  if (!conflict) return "";
  std::string what = conflict->path == pointer ? pointer : pointer + " overlaps " + conflict->path;
  return what + ", which hook \"" + conflict->hook + "\" set first; hook \"" + hook_ +
         "\" may not override it (may_override = false)";
}

// add, remove and replace where the path plainly exists (or, for add, its
// parent): done here, without nlohmann's patch_inplace, which copies the
// operation and parses its pointer again. Anything else (a missing parent,
// a bad index, the whole document) is left to patch_inplace, so errors keep
// its wording.
bool JsonTarget::run_directly(const PatchOp& op) {
  if (op.path.empty() || !is_one_of(op.op, {"add", "remove", "replace"})) return false;
  json* parent = const_cast<json*>(find_at(doc_, op.path, op.path.size() - 1));
  if (!parent) return false;
  const std::string& token = op.path.back();
  if (parent->is_object()) {
    auto it = parent->find(token);
    if (op.op == "add") {
      (*parent)[token] = *op.value;
    } else if (it == parent->end()) {
      return false;
    } else if (op.op == "replace") {
      *it = *op.value;
    } else {
      parent->erase(it);
    }
    return true;
  }
  if (!parent->is_array()) return false;
  auto& items = parent->get_ref<json::array_t&>();
  if (op.op == "add" && token == "-") {
    items.push_back(*op.value);
    return true;
  }
  auto index = array_index(token);
  if (!index || *index > items.size() || (op.op != "add" && *index == items.size())) return false;
  if (op.op == "add") {
    items.insert(items.begin() + static_cast<std::ptrdiff_t>(*index), *op.value);
  } else if (op.op == "replace") {
    items[*index] = *op.value;
  } else {
    items.erase(items.begin() + static_cast<std::ptrdiff_t>(*index));
  }
  return true;
}

std::string JsonTarget::refuse_scalar_parent(const PatchOp& op) const {
  if (op.op == "test" || op.op == "replace") return "";
  if (op.op != "move") return scalar_parent(doc_, op.path);
  if (std::string why = scalar_parent(doc_, op.from); !why.empty()) return why;
  // The add lands in the document without `from`, where indices may have moved.
  json without = doc_;
  try {
    without.patch_inplace(json::array({{{"op", "remove"}, {"path", op.raw->at("from")}}}));
  } catch (const json::exception&) {
    return "";  // the move fails as patch_inplace says
  }
  return scalar_parent(without, op.path);
}

std::string JsonTarget::run(const PatchOp& op) {
  if (run_directly(op)) return "";
  if (std::string why = refuse_scalar_parent(op); !why.empty()) return why;
  try {
    doc_.patch_inplace(json::array({*op.raw}));
  } catch (const json::exception& e) {
    if (op.op == "test") return "the test failed: " + to_pointer(op.path) + " is not the given value";
    return without_tag(e.what());
  }
  return "";
}

void PatchSession::record(PatchOp& op, std::optional<size_t> parent) {
  if (op.op == "move") {
    // Looked at after the operation: a move onto an ancestor of its source
    // leaves another value at the source's parent, maybe an array the
    // source's last token does not index; and the move shifted the arrays.
    record_removal(op.from, parent_array(op.from) && array_index(op.from.back()));
    record_add(op.path, op.path_text, *op.value, parent_array(op.path));
  } else if (op.op == "remove") {
    record_removal(op.path, parent && array_index(op.path.back()));  // an array stays one, one shorter
  } else if (op.op == "replace") {
    owners_.claim_set(op.path_text, *op.value, hook_);
  } else {  // add, copy: an array is one longer
    record_add(op.path, op.path_text, *op.value, parent ? std::optional<size_t>(*parent + 1) : std::nullopt);
  }
  // The operation's own pointers: parsed, they were valid, so they are
  // already in the form to_pointer() would give.
  std::string from = is_one_of(op.op, {"move", "copy"}) ? op.raw->at("from").get_ref<const std::string&>() : "";
  json value = op.op == "remove" || !keep_values_ ? json() : *op.value;
  changes_.push_back({hook_, op.op, std::move(op.path_text), std::move(from), std::move(value), std::move(op.path),
                      std::move(op.from)});
}

void PatchSession::record_removal(const PathTokens& path, bool in_array) {
  if (in_array) {
    owners_.shift(parent_of(path), *array_index(path.back()), -1);
    return;
  }
  owners_.claim_removal(path, hook_);
}

void PatchSession::record_add(const PathTokens& path, const std::string& pointer, const json& value,
                              std::optional<size_t> size) {
  if (!size) {
    owners_.claim_set(pointer, value, hook_);
    return;
  }
  size_t index = path.back() == "-" ? *size - 1 : *array_index(path.back());
  owners_.shift(parent_of(path), index, 1);
  owners_.claim_set(to_pointer(child_of(parent_of(path), std::to_string(index))), value, hook_);
}

}  // namespace owrap
