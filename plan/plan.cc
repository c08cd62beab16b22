#include "plan/plan.h"

#include "common/inline_arena.h"
#include "common/secrets.h"
#include "plan/message_target.h"
#include "plan/sandbox_json.h"
#include "plan/write_back.h"

namespace owrap {

using grpc::Status;
using grpc::StatusCode;
using nlohmann::json;
using openshell::compute::v1::DriverSandbox;

namespace {

constexpr std::string_view kTokenEnvPrefix = "OPENSHELL_SANDBOX_TOKEN";

void drop_token_entries(google::protobuf::Map<std::string, std::string>& environment) {
  for (auto it = environment.begin(); it != environment.end();) {
    it = it->first.rfind(kTokenEnvPrefix, 0) == 0 ? environment.erase(it) : std::next(it);
  }
}

std::string hook_prefix(const std::string& hook) {
  return "hook \"" + hook + "\": ";
}

// At least dump().size(): a string's character escapes as at most six
// ("\u001f"), a number prints in at most 32. Most patch sets are far below
// the limit, and this walk allocates nothing.
size_t dump_size_bound(const json& value) {
  switch (value.type()) {
    case json::value_t::string:
      return 2 + 6 * value.get_ref<const std::string&>().size();
    case json::value_t::array: {
      const auto& items = value.get_ref<const json::array_t&>();
      size_t n = 2 + items.size();
      for (const auto& item : items) n += dump_size_bound(item);
      return n;
    }
    case json::value_t::object: {
      const auto& members = value.get_ref<const json::object_t&>();
      size_t n = 2 + members.size();
      for (const auto& [key, item] : members) n += 3 + 6 * key.size() + dump_size_bound(item);
      return n;
    }
    default:
      return 32;
  }
}

// At least prepared_to_json(ops).dump().size().
size_t prepared_size_bound(const PreparedPatches& ops) {
  size_t n = 2 + ops.size();
  for (const PatchOp& op : ops) {
    n += 32 + 6 * (op.op.size() + op.path_text.size());  // {"op":"","path":"","value":}
    if (op.op != "remove") n += dump_size_bound(prepared_value(op));
  }
  return n;
}

// A reply beyond the limits is malformed: refused before any operation runs.
std::string check_limits(const json& patches, const PatchRules& rules) {
  if (!patches.is_array()) return "the patches must be a JSON array of operations";
  if (patches.size() > rules.max_patches) {
    return std::to_string(patches.size()) + " patch operations, more than the limit of " +
           std::to_string(rules.max_patches) + " (max_patches)";
  }
  if (dump_size_bound(patches) <= rules.max_bytes) return "";
  size_t bytes = patches.dump().size();
  if (bytes > rules.max_bytes) {
    return "the patch set is " + std::to_string(bytes) + " bytes, more than the limit of " +
           std::to_string(rules.max_bytes) + " (max_bytes)";
  }
  return "";
}

// What hook_view() removes, removed from `view` in place.
void make_hook_view(DriverSandbox& view) {
  scrub_secrets(view);
  if (view.has_spec()) {
    drop_token_entries(*view.mutable_spec()->mutable_environment());
    if (view.spec().has_template_())
      drop_token_entries(*view.mutable_spec()->mutable_template_()->mutable_environment());
  }
}

// The plan's views live on an arena whose first block holds a typical view
// and a patch set's copy of it: their strings and map nodes cost no malloc
// of their own, and they are freed whole when the last holder lets go.
struct PlanArena : InlineArena<8192> {
  PlanArena() : InlineArena(growth()) {}

  static google::protobuf::ArenaOptions growth() {
    google::protobuf::ArenaOptions options;
    options.start_block_size = 8192;
    options.max_block_size = 65536;
    return options;
  }
};

std::shared_ptr<google::protobuf::Arena> make_plan_arena() {
  auto holder = std::make_shared_for_overwrite<PlanArena>();
  return std::shared_ptr<google::protobuf::Arena>(holder, &holder->arena);
}

}  // namespace

DriverSandbox hook_view(const DriverSandbox& sandbox) {
  DriverSandbox view(sandbox);
  make_hook_view(view);
  return view;
}

Result<Plan> Plan::from(const DriverSandbox& sandbox) {
  Plan plan;
  plan.arena_ = make_plan_arena();
  auto* view = google::protobuf::Arena::CreateMessage<DriverSandbox>(plan.arena_.get());
  view->CopyFrom(sandbox);
  make_hook_view(*view);
  plan.base_ = std::shared_ptr<const DriverSandbox>(plan.arena_, view);
  plan.current_ = plan.base_;
  return plan;
}

std::shared_ptr<DriverSandbox> Plan::new_view() const {
  if (!arena_) arena_ = make_plan_arena();
  // Counted: what the arena holds (a copy's map nodes, messages and string
  // objects take several times its wire size) and what its copies' long
  // strings hold on the heap until it goes (at most their wire size). The
  // first copy, most calls' only one, always goes to the arena unmeasured;
  // the view after it stands in for it.
  if (copied_on_arena_) {
    const size_t bytes = current_->ByteSizeLong();
    if (arena_copied_bytes_ == 0) arena_copied_bytes_ = bytes;
    if (arena_->SpaceAllocated() + arena_copied_bytes_ + bytes > kArenaBytes) return std::make_shared<DriverSandbox>();
    arena_copied_bytes_ += bytes;
  }
  copied_on_arena_ = true;
  return std::shared_ptr<DriverSandbox>(arena_, google::protobuf::Arena::CreateMessage<DriverSandbox>(arena_.get()));
}

Result<const nlohmann::json*> Plan::document() const {
  if (!json_) {
    auto doc = message_to_json(*current_);
    if (!doc) return Error{"the sandbox has no JSON form: " + doc.error()};
    json_ = std::move(doc.value());
  }
  return &*json_;
}

const nlohmann::json& Plan::json() const {
  static const nlohmann::json kNone = nlohmann::json::object();
  auto doc = document();
  return doc ? *doc.value() : kNone;
}

bool Plan::current_prints_back() const {
  if (!current_prints_back_) current_prints_back_ = MessageTarget::prints_back(*current_);
  return *current_prints_back_;
}

Result<nlohmann::json> Plan::copy_document() const {
  auto doc = document();
  if (!doc) return Error{doc.error()};
  return *doc.value();
}

Result<nlohmann::json> Plan::take_document() const {
  auto doc = document();
  if (!doc) return Error{doc.error()};
  nlohmann::json out = std::move(*json_);
  json_.reset();  // made again from current_ if this apply is refused
  return out;
}

Result<const Protection*> Plan::protection_for(const std::string& hook, const PatchRules& rules,
                                               std::optional<Protection>& made) const {
  if (rules.protection) return rules.protection.get();
  auto protection = Protection::make(*DriverSandbox::descriptor(), rules.extra_protected);
  if (!protection) return Error{hook_prefix(hook) + protection.error()};
  made = std::move(protection.value());
  return &*made;
}

Result<Plan::Staged> Plan::stage(const std::string& hook, const nlohmann::json& patches, bool may_override,
                                 const PatchRules& rules, bool take_json) const {
  if (std::string why = check_limits(patches, rules); !why.empty()) return Error{hook_prefix(hook) + why};
  std::optional<Protection> made;
  auto found = protection_for(hook, rules, made);
  if (!found) return Error{found.error()};
  const Protection& protection = *found.value();
  if (!rules.json_only && MessageTarget::handles(patches)) {
    try {
      return stage_on_message(hook, patches, may_override, protection, rules.keep_values);
    } catch (const MessageTarget::Unsure&) {
      // the JSON form decides, from the start
    }
  }
  return stage_on_json(hook, patches, may_override, protection, rules.keep_values,
                       take_json ? take_document() : copy_document());
}

template <class Patches>
Result<Plan::Staged> Plan::stage_on_message(const std::string& hook, Patches& patches, bool may_override,
                                            const Protection& protection, bool keep_values) const {
  if (!current_prints_back()) throw MessageTarget::Unsure{};
  Staged out{{}, {}, new_view()};
  out.sandbox->CopyFrom(*current_);
  MessageTarget target(*out.sandbox);
  PatchSession session(protection, hook, may_override, target, owners_, keep_values);
  if (std::string why = session.apply_all(patches); !why.empty()) return Error{hook_prefix(hook) + why};
  if (!target.still_prints_back()) {  // -0, too deep...: as the form reads it
    session.give_back(patches);
    throw MessageTarget::Unsure{};
  }
  out.owners = std::move(session.owners());
  out.changes = std::move(session.changes());
  out.on_message = true;
  return out;
}

Result<Plan::Staged> Plan::stage_on_json(const std::string& hook, const nlohmann::json& patches, bool may_override,
                                         const Protection& protection, bool keep_values,
                                         Result<nlohmann::json> doc) const {
  if (!doc) return Error{hook_prefix(hook) + doc.error()};
  JsonTarget target(std::move(doc.value()));
  PatchSession session(protection, hook, may_override, target, owners_, keep_values);
  if (std::string why = session.apply_all(patches); !why.empty()) return Error{hook_prefix(hook) + why};
  Staged out{std::move(session.owners()), std::move(session.changes()), new_view()};
  if (auto parsed = json_to_message(target.doc(), *out.sandbox); !parsed) {
    return Error{hook_prefix(hook) + find_type_error(patches, parsed.error())};
  }
  return out;
}

// The operation after the last prefix of the patch set whose result is still
// a DriverSandbox: the one that broke it for good.
std::string Plan::find_type_error(const nlohmann::json& patches, const std::string& whole) const {
  nlohmann::json doc = json();
  DriverSandbox scratch;
  size_t culprit = 0;
  std::string why;
  for (size_t i = 0; i < patches.size(); i++) {
    try {  // every operation applied once already; this only guards the gRPC thread
      doc.patch_inplace(nlohmann::json::array({patches[i]}));
    } catch (const nlohmann::json::exception& e) {
      return patch_label(patches[i], i) + ": " + e.what();
    }
    auto parsed = json_to_message(doc, scratch);
    if (parsed) {
      culprit = i + 1;
    } else if (culprit == i) {
      why = parsed.error();
    }
  }
  // The replay starts from the document the patch set ran on (the plan's
  // JSON is always protobuf's form of the view), so some prefix failed; if
  // that ever stops holding, no operation is named rather than one past the last.
  if (culprit >= patches.size()) return "the result is not a DriverSandbox: " + whole;
  const nlohmann::json& op = patches[culprit];
  return patch_label(op, culprit) + ": " + op.value("path", "") + ": the result is not a DriverSandbox: " + why;
}

Status Plan::apply(const std::string& hook, const nlohmann::json& patches, bool may_override, const PatchRules& rules) {
  auto staged = stage(hook, patches, may_override, rules, /*take_json=*/true);
  if (!staged) return Status(StatusCode::INVALID_ARGUMENT, staged.error());
  commit(std::move(staged.value()));
  return Status::OK;
}

Status Plan::apply_prepared(const std::string& hook, PreparedPatches& ops, bool may_override, const PatchRules& rules) {
  // Past a limit, or where only the JSON form can answer, the set goes as
  // the JSON it means, so refusals read the same.
  auto as_json = [&] { return apply(hook, prepared_to_json(ops), may_override, rules); };
  if (rules.json_only || ops.size() > rules.max_patches || prepared_size_bound(ops) > rules.max_bytes ||
      !MessageTarget::handles(ops)) {
    return as_json();
  }
  std::optional<Protection> made;
  auto found = protection_for(hook, rules, made);
  if (!found) return Status(StatusCode::INVALID_ARGUMENT, found.error());
  try {
    auto staged = stage_on_message(hook, ops, may_override, *found.value(), rules.keep_values);
    if (!staged) return Status(StatusCode::INVALID_ARGUMENT, staged.error());
    commit(std::move(staged.value()));
    return Status::OK;
  } catch (const MessageTarget::Unsure&) {
    return as_json();
  }
}

void Plan::commit(Staged staged) {
  if (staged.on_message) applied_on_message_++;
  // Not the patched document: it keeps what the hook wrote ({"gpu": null})
  // where the view has protobuf's form ({}); the next hook is shown the view,
  // so its patches, and a refusal's replay, must run on the same form.
  json_.reset();
  owners_ = std::move(staged.owners);
  current_ = std::move(staged.sandbox);
  // The message path checked its result; a JSON path's is judged when asked.
  current_prints_back_ = staged.on_message ? std::optional<bool>(true) : std::nullopt;
  for (auto& change : staged.changes) changes_.push_back(std::move(change));
}

Result<std::vector<PlanChange>> Plan::preview(const std::string& hook, const nlohmann::json& patches, bool may_override,
                                              const PatchRules& rules) const {
  auto staged = stage(hook, patches, may_override, rules, /*take_json=*/false);
  if (!staged) return Error{staged.error()};
  return std::move(staged->changes);
}

Status Plan::write_back(DriverSandbox& target) const {
  if (changes_.empty()) return Status::OK;
  ChangedPaths changed;
  for (const auto& change : changes_) {
    changed.add(change.path_tokens);
    if (change.op == "move") changed.add(change.from_tokens);  // a copy's source is unchanged
  }
  write_changes_at(*base_, *current_, target, changed);
  return Status::OK;
}

}  // namespace owrap
