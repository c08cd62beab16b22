// quota (validate): at most N live sandboxes per value of a label, counted
// from the delegate's own ListSandboxes plus this wrapper's creates in
// flight.
//
// Race-free within one wrapper: the check and the reservation happen under
// one lock, and sandboxes are counted as a SET of ids (so nothing counts
// twice): the listed ones, the ones reserved by creates still in flight, and
// the ones committed after the list began (a list that started before a
// commit may not show it). Every list remembers the commit sequence number
// at its start; commits older than every list in flight are forgotten, since
// any later list shows them (the delegate's ListSandboxes is assumed to
// show a sandbox once its CreateSandbox answered OK).
//
// Several replicas of the wrapper share nothing here: they need the
// journal's shared database. Callers can set labels themselves, so the
// label counted should be stamped by a gateway interceptor.
#include "common/log.h"
#include "common/toml_reader.h"
#include "hooks/builtin/builtin_hook.h"

#include <limits>
#include <map>
#include <set>

namespace owrap {

namespace {

constexpr std::string_view kKind = "quota";
const PhaseSet kPhases = phases_of({HookPhase::kValidate});
constexpr int64_t kMaxLimit = 1'000'000'000;

struct QuotaConfig {
  std::string label;
  int64_t max = 0;
  std::map<std::string, int64_t> overrides;
  bool count_missing_label = false;
  bool require_label = false;
};

// One validate invocation waiting for its list.
struct Invocation {
  HookDone done;
  std::string id;
  std::string value;
  int64_t limit = 0;
  bool reserve = false;   // CreateSandbox; ValidateSandboxCreate only checks
  uint64_t list_seq = 0;  // the commit sequence number when its list began
  bool finished = false;  // guarded by State::mu
};
using InvocationPtr = std::shared_ptr<Invocation>;

// Calls for one sandbox id that were invoked and have not finished.
struct Pending {
  std::string value;
  int reservations = 0;  // creates allowed, holding a place
  int others = 0;        // validations, and creates not (yet) allowed
};

struct Commit {
  std::string value;
  uint64_t seq = 0;
};

// Shared with list callbacks, which may outlive the hook.
struct State {
  std::mutex mu;
  uint64_t seq = 0;  // bumped by every commit
  bool stopped = false;
  std::multiset<uint64_t> lists;  // list_seq of every list in flight
  std::map<std::string, Pending> pending;
  std::map<std::string, Commit> committed;
  std::set<InvocationPtr> invocations;

  // Commits no list in flight can have missed.
  void prune() {
    uint64_t oldest = lists.empty() ? std::numeric_limits<uint64_t>::max() : *lists.begin();
    for (auto it = committed.begin(); it != committed.end();) {
      it = it->second.seq <= oldest ? committed.erase(it) : std::next(it);
    }
  }

  // Ends `inv` (its list is no longer awaited) and hands back its `done`,
  // empty if it already ended; dropping it here breaks any cycle through
  // the cancel signal, which keeps its callbacks until it fires. The caller
  // prunes once it no longer needs the commits `inv` may count.
  HookDone end(const InvocationPtr& inv) {
    if (inv->finished) return nullptr;
    inv->finished = true;
    lists.erase(lists.find(inv->list_seq));
    invocations.erase(inv);
    return std::move(inv->done);
  }
};

std::string describe_value(const QuotaConfig& cfg, const std::string& value) {
  return cfg.label + "=" + (value.empty() ? "(unlabelled)" : value);
}

class QuotaHook : public Hook {
 public:
  QuotaHook(std::string name, QuotaConfig cfg, BuiltinContext ctx)
      : Hook(std::move(name)),
        cfg_(std::make_shared<const QuotaConfig>(std::move(cfg))),
        ctx_(std::move(ctx)),
        state_(std::make_shared<State>()) {}
  ~QuotaHook() override { stop(); }

  std::string transport() const override { return "builtin:quota"; }
  std::optional<PhaseSet> implemented_phases() const override { return kPhases; }

  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options,
              HookDone done) override {
    const std::string& rpc = request->rpc();
    if (!is_phase(*request, HookPhase::kValidate) || (rpc != "CreateSandbox" && rpc != "ValidateSandboxCreate")) {
      return done(HookOutcome::answered(allow_response()));
    }
    const auto& sandbox = request->sandbox();
    std::string value = label_value(sandbox);
    if (value.empty() && cfg_->require_label) {
      return done(HookOutcome::answered(deny_response(
          "FAILED_PRECONDITION", "quota " + cfg_->label + ": the sandbox has no label \"" + cfg_->label + "\"")));
    }
    if (value.empty() && !cfg_->count_missing_label) return done(HookOutcome::answered(allow_response()));

    auto inv = std::make_shared<Invocation>();
    inv->done = std::move(done);
    inv->id = request->sandbox_id().empty() ? sandbox.id() : request->sandbox_id();
    inv->value = value;
    auto ov = cfg_->overrides.find(value);
    inv->limit = ov != cfg_->overrides.end() ? ov->second : cfg_->max;
    inv->reserve = rpc == "CreateSandbox";
    if (!begin(inv)) return inv->done(HookOutcome::failed(grpc::StatusCode::UNAVAILABLE, "hook stopped"));

    options.cancel->on_cancel([weak_state = std::weak_ptr<State>(state_), weak_inv = std::weak_ptr<Invocation>(inv)] {
      auto state = weak_state.lock();
      auto inv = weak_inv.lock();
      if (state && inv) fail(*state, inv, grpc::StatusCode::CANCELLED, "cancelled");
    });
    if (!ctx_.list_sandboxes) {
      return fail(*state_, inv, grpc::StatusCode::UNAVAILABLE, "cannot count sandboxes: no delegate to list them");
    }
    ctx_.list_sandboxes(options.deadline, [state = state_, inv, cfg = cfg_](
                                              grpc::Status status, std::vector<computepb::DriverSandbox> listed) {
      listed_for(*state, inv, *cfg, status, listed);
    });
  }

  void stop() override {
    std::vector<HookDone> ended;
    {
      std::lock_guard lock(state_->mu);
      state_->stopped = true;
      for (const auto& inv : std::set<InvocationPtr>(state_->invocations)) ended.push_back(state_->end(inv));
      state_->prune();
    }
    for (auto& done : ended) done(HookOutcome::failed(grpc::StatusCode::UNAVAILABLE, "hook stopped"));
  }

  void call_finished(const std::string& sandbox_id, bool delegate_committed) override {
    std::vector<HookDone> ended;
    {
      std::lock_guard lock(state_->mu);
      // The call is over: an invocation of it still waiting for its list
      // must never reserve a place afterwards.
      for (const auto& inv : std::set<InvocationPtr>(state_->invocations)) {
        if (inv->id == sandbox_id) ended.push_back(state_->end(inv));
      }
      release(sandbox_id, delegate_committed);
    }
    for (auto& done : ended) done(HookOutcome::failed(grpc::StatusCode::CANCELLED, "call finished"));
  }

  nlohmann::json describe() const override {
    std::lock_guard lock(state_->mu);
    size_t reserved = 0;
    for (const auto& [_, p] : state_->pending) reserved += p.reservations > 0 ? 1 : 0;
    return {{"label", cfg_->label}, {"max", cfg_->max}, {"reserved", reserved}};
  }

 private:
  std::string label_value(const computepb::DriverSandbox& sandbox) const {
    const auto& labels = sandbox.spec().template_().labels();
    auto it = labels.find(cfg_->label);
    return it == labels.end() ? std::string() : it->second;
  }

  bool begin(const InvocationPtr& inv) {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return false;
    Pending& p = state_->pending[inv->id];
    p.value = inv->value;
    p.others++;
    inv->list_seq = state_->seq;
    state_->lists.insert(inv->list_seq);
    state_->invocations.insert(inv);
    return true;
  }

  // Pairs the end of one call with what its invocation registered. A
  // commit is remembered for the lists in flight that began before it.
  void release(const std::string& id, bool committed) {
    auto it = state_->pending.find(id);
    if (it == state_->pending.end()) return;
    Pending& p = it->second;
    // A commit can only end a create: it takes a reservation first.
    int& first = committed ? p.reservations : p.others;
    int& second = committed ? p.others : p.reservations;
    if (first > 0) {
      first--;
    } else if (second > 0) {
      second--;
    }
    if (committed) state_->committed[id] = {p.value, ++state_->seq};
    if (p.reservations == 0 && p.others == 0) state_->pending.erase(it);
    state_->prune();
  }

  static void fail(State& state, const InvocationPtr& inv, grpc::StatusCode code, std::string message) {
    HookDone done;
    {
      std::lock_guard lock(state.mu);
      done = state.end(inv);
      state.prune();
    }
    if (done) done(HookOutcome::failed(code, std::move(message)));
  }

  static void listed_for(State& state, const InvocationPtr& inv, const QuotaConfig& cfg, const grpc::Status& status,
                         const std::vector<computepb::DriverSandbox>& listed) {
    HookOutcome outcome;
    HookDone done;
    {
      std::lock_guard lock(state.mu);
      done = state.end(inv);
      if (!done) return;
      if (!status.ok()) {
        auto code = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? grpc::StatusCode::DEADLINE_EXCEEDED
                                                                               : grpc::StatusCode::UNAVAILABLE;
        outcome = HookOutcome::failed(code, "cannot count sandboxes: ListSandboxes: " + status.error_message());
      } else {
        outcome = decide(state, *inv, cfg, listed);
      }
      state.prune();
    }
    done(std::move(outcome));
  }

  // Under state.mu.
  static HookOutcome decide(State& state, const Invocation& inv, const QuotaConfig& cfg,
                            const std::vector<computepb::DriverSandbox>& listed) {
    std::set<std::string> ids;
    for (const auto& sb : listed) {
      if (sb.status().deleting()) continue;  // on its way out
      const auto& labels = sb.spec().template_().labels();
      auto it = labels.find(cfg.label);
      if ((it == labels.end() ? std::string() : it->second) == inv.value) ids.insert(sb.id());
    }
    for (const auto& [id, p] : state.pending) {
      if (p.reservations > 0 && p.value == inv.value) ids.insert(id);
    }
    for (const auto& [id, c] : state.committed) {
      if (c.seq > inv.list_seq && c.value == inv.value) ids.insert(id);
    }
    ids.erase(inv.id);
    auto in_use = static_cast<int64_t>(ids.size());
    std::string usage = std::to_string(in_use) + " of " + std::to_string(inv.limit);
    if (in_use >= inv.limit) {
      return HookOutcome::answered(deny_response(
          "RESOURCE_EXHAUSTED", "quota " + describe_value(cfg, inv.value) + ": " + usage + " sandboxes in use"));
    }
    if (inv.reserve) {
      Pending& p = state.pending[inv.id];
      if (p.others > 0) p.others--;
      p.reservations++;
    }
    auto response = allow_response();
    (*response.mutable_log_annotations())["quota"] = describe_value(cfg, inv.value) + ": " + usage + " in use before";
    return HookOutcome::answered(std::move(response));
  }

  std::shared_ptr<const QuotaConfig> cfg_;  // shared with list callbacks
  BuiltinContext ctx_;
  std::shared_ptr<State> state_;
};

Result<std::unique_ptr<Hook>> make_quota(const HookSpec& spec, const BuiltinContext& ctx) {
  std::vector<std::string> errors;
  TomlSection config(config_table(spec), spec.config_key, errors);
  config.allow_only({"label", "max", "overrides", "count_missing_label", "require_label"});
  QuotaConfig cfg;
  auto label = config.string("label");
  if (!config.has("label")) {
    config.error("label", "missing (the label whose values are counted, such as \"tenant\")");
  } else if (label && label->empty()) {
    config.error("label", "must not be empty");
  }
  if (label) cfg.label = *label;
  auto max = config.integer("max", 0, kMaxLimit);
  if (!config.has("max")) config.error("max", "missing (sandboxes allowed per label value)");
  if (max) cfg.max = *max;
  if (auto overrides = config.table("overrides")) {
    for (const auto& [k, _] : *config_table(spec).get("overrides")->as_table()) {
      if (auto v = overrides->integer(k.str(), 0, kMaxLimit)) cfg.overrides[std::string(k.str())] = *v;
    }
  }
  cfg.count_missing_label = config.boolean("count_missing_label").value_or(false);
  cfg.require_label = config.boolean("require_label").value_or(false);
  if (cfg.count_missing_label && cfg.require_label) {
    config.error("require_label", "contradicts count_missing_label = true (choose one)");
  }
  if (!errors.empty()) return config_error(errors);
  return std::unique_ptr<Hook>(new QuotaHook(spec.name, std::move(cfg), ctx));
}

}  // namespace

BuiltinKind quota_builtin() {
  return {kKind, kPhases, &make_quota};
}

}  // namespace owrap
