// quota (validate): at most N live sandboxes per value of a label, counted
// as a SET of sandbox ids (nothing counts twice) under one lock, together
// with the reservation of the create being checked. Two ways to know the
// delegate's sandboxes:
//
// From the watch (the usual way). The wrapper's WatchHub feeds every event
// it publishes, and whether its upstream watch is live (SandboxFeed). While
// it is live, an index id -> label value is seeded by ONE ListSandboxes and
// then kept by events; counts per label value are kept with it (Tally), so
// a create is answered inline, with no list and no suspension. Ordering:
// the seed list begins only once the feed is live (the delegate has
// registered the watch), so every change after the list's snapshot reaches
// the hook as an event. Events that arrive while the seed list is in flight
// are kept aside and win over the list for their ids (an event is never
// older than the list's view of its id in a way that matters: if the list
// is newer, the change that made it newer has its own event, which follows
// in order). Validations arriving meanwhile wait for the seed.
//
// By listing (the fallback, and the only way without a feed): while the
// feed is not live (not yet established, or broken until the hub's resync
// completed), and until a seed landed, every validation lists, as before:
// the listed ids, the ones reserved by creates in flight, and the ones
// committed after the list began (a list that started before a commit may
// not show it). Every list remembers the commit sequence number at its
// start; commits older than every list in flight are forgotten, since any
// later list shows them (the delegate's ListSandboxes is assumed to show a
// sandbox once its CreateSandbox answered OK).
//
// Commits on the watch path: a create whose call committed counts from
// call_finished on. If the watch reported its id since the create was
// invoked, the index already says what the delegate said (created, or even
// deleted again); otherwise the commit itself enters the index, until an
// event about the id or a later seed list replaces it. A commit the watch
// never reports (a delegate whose watch omits creates, or a sandbox that
// vanished silently) is not kept for ever: once one is older than
// report_grace_ms, the next validation drops the index and seeds again,
// and that list decides.
//
// Sandboxes with status.deleting are not counted (on their way out: the
// gateway shows them as Deleting and they never come back), on both paths.
//
// Several replicas of the wrapper share nothing here: they need the
// journal's shared database. Callers can set labels themselves, so the
// label counted should be stamped by a gateway interceptor.
#include "common/log.h"
#include "common/toml_reader.h"
#include "hooks/builtin/builtin_hook.h"

#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

namespace owrap {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kKind = "quota";
const PhaseSet kPhases = phases_of({HookPhase::kValidate});
constexpr int64_t kMaxLimit = 1'000'000'000;
constexpr int64_t kDefaultReportGraceMs = 30'000;

struct QuotaConfig {
  std::string label;
  int64_t max = 0;
  std::map<std::string, int64_t> overrides;
  bool count_missing_label = false;
  bool require_label = false;
  std::chrono::milliseconds report_grace{kDefaultReportGraceMs};
};

// The counted value: the label's, empty when it is missing.
std::string label_value(const QuotaConfig& cfg, const computepb::DriverSandbox& sandbox) {
  const auto& labels = sandbox.spec().template_().labels();
  auto it = labels.find(cfg.label);
  return it == labels.end() ? std::string() : it->second;
}

// What one validation checks.
struct Ask {
  std::string id;
  std::string value;
  int64_t limit = 0;
  bool reserve = false;  // CreateSandbox; ValidateSandboxCreate only checks
};

// One validation waiting for a list.
struct Invocation {
  HookDone done;
  Ask ask;
  uint64_t list_seq = 0;  // the commit sequence number when its list began
  bool finished = false;  // guarded by State::mu
};
using InvocationPtr = std::shared_ptr<Invocation>;

// One ListSandboxes in flight and who waits for it: one validation on the
// list path, every validation that came while it ran for a seed.
struct ListCall {
  uint64_t start_seq = 0;
  std::vector<InvocationPtr> waiters;
};
using ListCallPtr = std::shared_ptr<ListCall>;

// Calls for one sandbox id that were invoked and have not finished.
struct Pending {
  std::string value;
  int reservations = 0;   // creates allowed, holding a place
  int others = 0;         // validations, and creates not (yet) allowed
  bool reported = false;  // the watch sent an event about the id meanwhile
};

struct Commit {
  std::string value;
  uint64_t seq = 0;
};

// Sandboxes per label value over a set of ids, each counted under one
// value: O(1) to ask, O(1) to change one id.
class Tally {
 public:
  void set(const std::string& id, const std::string* value) {
    auto it = of_id_.find(id);
    if (it != of_id_.end()) {
      if (value && *value == it->second) return;
      if (--per_value_[it->second] == 0) per_value_.erase(it->second);
      of_id_.erase(it);
    }
    if (!value) return;
    of_id_.emplace(id, *value);
    per_value_[*value]++;
  }
  int64_t count(const std::string& value) const {
    auto it = per_value_.find(value);
    return it == per_value_.end() ? 0 : it->second;
  }
  const std::string* counted_as(const std::string& id) const {
    auto it = of_id_.find(id);
    return it == of_id_.end() ? nullptr : &it->second;
  }
  void clear() {
    of_id_.clear();
    per_value_.clear();
  }

 private:
  std::unordered_map<std::string, std::string> of_id_;
  std::unordered_map<std::string, int64_t> per_value_;
};

// The watch path's view of the delegate.
struct WatchIndex {
  enum class Seed { kNone, kSeeding, kSeeded };
  struct Unreported {
    uint64_t seq;
    Clock::time_point at;
    std::string id;
  };

  bool live = false;
  Seed seed = Seed::kNone;
  ListCallPtr seeding;  // the seed list in flight
  // While seeding: what events (and unreported commits) said, newer than
  // the list for these ids. nullopt: gone.
  std::unordered_map<std::string, std::optional<std::string>> touched;
  // Once seeded: the delegate's sandboxes (not deleting) and their values.
  std::unordered_map<std::string, std::string> present;
  // present plus the ids reserved by creates in flight.
  Tally tally;
  // Commits in the index the watch has not reported yet: id -> commit seq,
  // and the same in commit order for the grace.
  std::unordered_map<std::string, uint64_t> unreported;
  std::deque<Unreported> unreported_order;

  void reset() {
    seed = Seed::kNone;
    seeding.reset();
    touched.clear();
    present.clear();
    tally.clear();
    unreported.clear();
    unreported_order.clear();
  }
};

// Shared with list callbacks and the feed, which may outlive the hook.
struct State {
  std::mutex mu;
  uint64_t seq = 0;  // bumped by every commit
  bool stopped = false;
  std::multiset<uint64_t> lists;  // start_seq of every list in flight
  std::unordered_map<std::string, Pending> pending;
  std::map<std::string, Commit> committed;  // for the lists in flight
  std::set<InvocationPtr> invocations;
  WatchIndex watch;

  // Commits no list in flight can have missed.
  void prune() {
    uint64_t oldest = lists.empty() ? std::numeric_limits<uint64_t>::max() : *lists.begin();
    for (auto it = committed.begin(); it != committed.end();) {
      it = it->second.seq <= oldest ? committed.erase(it) : std::next(it);
    }
  }

  // Ends `inv` and hands back its `done`, empty if it already ended;
  // dropping it here breaks any cycle through the cancel signal, which
  // keeps its callbacks until it fires.
  HookDone end(const InvocationPtr& inv) {
    if (inv->finished) return nullptr;
    inv->finished = true;
    invocations.erase(inv);
    return std::move(inv->done);
  }

  // What `id` counts as on the watch path: the delegate's view, else its
  // reservation.
  void recount(const std::string& id) {
    if (watch.seed != WatchIndex::Seed::kSeeded) return;
    const std::string* value = nullptr;
    if (auto it = watch.present.find(id); it != watch.present.end()) {
      value = &it->second;
    } else if (auto p = pending.find(id); p != pending.end() && p->second.reservations > 0) {
      value = &p->second.value;
    }
    watch.tally.set(id, value);
  }

  // An event (or a commit the watch did not report): `id` now has `value`,
  // or is gone.
  void apply(const std::string& id, std::optional<std::string> value) {
    switch (watch.seed) {
      case WatchIndex::Seed::kNone:
        return;  // the next seed list begins later and shows it
      case WatchIndex::Seed::kSeeding:
        watch.touched[id] = std::move(value);
        return;
      case WatchIndex::Seed::kSeeded:
        if (value) {
          watch.present[id] = std::move(*value);
        } else {
          watch.present.erase(id);
        }
        recount(id);
        return;
    }
  }

  void on_event(const std::string& id, std::optional<std::string> value) {
    if (auto p = pending.find(id); p != pending.end()) p->second.reported = true;
    watch.unreported.erase(id);
    apply(id, std::move(value));
  }

  void note_unreported_commit(const std::string& id, const std::string& value) {
    if (watch.seed == WatchIndex::Seed::kNone) return;
    watch.unreported[id] = seq;
    watch.unreported_order.push_back({seq, Clock::now(), id});
    apply(id, value);
  }

  // The index answers only when live, seeded, and no commit has gone
  // unreported longer than `grace` (else it is dropped, to be seeded again).
  bool watch_answers(std::chrono::milliseconds grace, const std::string& label) {
    if (!watch.live || watch.seed != WatchIndex::Seed::kSeeded) return false;
    auto& order = watch.unreported_order;
    while (!order.empty()) {
      auto it = watch.unreported.find(order.front().id);
      if (it == watch.unreported.end() || it->second != order.front().seq) {
        order.pop_front();
        continue;
      }
      if (Clock::now() - order.front().at < grace) break;
      log_warn("quota: the watch has not reported a committed create; counting from a new list",
               {{"label", label}, {"sandbox_id", order.front().id}, {"grace_ms", grace.count()}});
      watch.reset();
      return false;
    }
    return true;
  }

  // The seed list is in: the index is the list, overlaid with what
  // happened since it began.
  void land_seed(const ListCallPtr& list, const QuotaConfig& cfg, const std::vector<computepb::DriverSandbox>& listed) {
    auto& w = watch;
    w.present.clear();
    for (const auto& sb : listed) {
      if (!sb.status().deleting()) w.present[sb.id()] = label_value(cfg, sb);
    }
    for (auto& [id, value] : w.touched) {
      if (value) {
        w.present[id] = std::move(*value);
      } else {
        w.present.erase(id);
      }
    }
    w.touched.clear();
    for (auto it = w.unreported.begin(); it != w.unreported.end();) {
      it = it->second <= list->start_seq ? w.unreported.erase(it) : std::next(it);
    }
    w.seed = WatchIndex::Seed::kSeeded;
    w.tally.clear();
    for (const auto& [id, value] : w.present) w.tally.set(id, &value);
    for (const auto& [id, p] : pending) {
      if (p.reservations > 0 && !w.present.count(id)) w.tally.set(id, &p.value);
    }
  }
};

std::string describe_value(const QuotaConfig& cfg, const std::string& value) {
  return cfg.label + "=" + (value.empty() ? "(unlabelled)" : value);
}

// Under state.mu: `in_use` places are taken by others than ask.id.
HookOutcome verdict(State& state, const QuotaConfig& cfg, const Ask& ask, int64_t in_use) {
  std::string usage = std::to_string(in_use) + " of " + std::to_string(ask.limit);
  if (in_use >= ask.limit) {
    return HookOutcome::answered(deny_response(
        "RESOURCE_EXHAUSTED", "quota " + describe_value(cfg, ask.value) + ": " + usage + " sandboxes in use"));
  }
  if (ask.reserve) {
    Pending& p = state.pending[ask.id];
    if (p.others > 0) p.others--;
    p.reservations++;
    state.recount(ask.id);
  }
  auto response = allow_response();
  (*response.mutable_log_annotations())["quota"] = describe_value(cfg, ask.value) + ": " + usage + " in use before";
  return HookOutcome::answered(std::move(response));
}

// Under state.mu, on the watch path.
HookOutcome decide_from_watch(State& state, const QuotaConfig& cfg, const Ask& ask) {
  const Tally& tally = state.watch.tally;
  int64_t in_use = tally.count(ask.value);
  if (const std::string* mine = tally.counted_as(ask.id); mine && *mine == ask.value) in_use--;
  return verdict(state, cfg, ask, in_use);
}

// Under state.mu, on the list path.
HookOutcome decide_from_list(State& state, const QuotaConfig& cfg, const Invocation& inv,
                             const std::vector<computepb::DriverSandbox>& listed) {
  const Ask& ask = inv.ask;
  std::set<std::string> ids;
  for (const auto& sb : listed) {
    if (!sb.status().deleting() && label_value(cfg, sb) == ask.value) ids.insert(sb.id());
  }
  for (const auto& [id, p] : state.pending) {
    if (p.reservations > 0 && p.value == ask.value) ids.insert(id);
  }
  for (const auto& [id, c] : state.committed) {
    if (c.seq > inv.list_seq && c.value == ask.value) ids.insert(id);
  }
  ids.erase(ask.id);
  return verdict(state, cfg, ask, static_cast<int64_t>(ids.size()));
}

class QuotaHook : public Hook {
 public:
  QuotaHook(std::string name, QuotaConfig cfg, BuiltinContext ctx)
      : Hook(std::move(name)),
        cfg_(std::make_shared<const QuotaConfig>(std::move(cfg))),
        ctx_(std::move(ctx)),
        state_(std::make_shared<State>()) {
    if (ctx_.sandbox_feed) subscription_ = subscribe(ctx_.sandbox_feed, state_, cfg_);
  }
  ~QuotaHook() override {
    subscription_.reset();
    stop();
  }

  std::string transport() const override { return "builtin:quota"; }
  std::optional<PhaseSet> implemented_phases() const override { return kPhases; }
  bool reads_path_owners() const override { return false; }

  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options,
              HookDone done) override {
    const std::string& rpc = request->rpc();
    if (!is_phase(*request, HookPhase::kValidate) || (rpc != "CreateSandbox" && rpc != "ValidateSandboxCreate")) {
      return done(HookOutcome::answered(allow_response()));
    }
    const auto& sandbox = request->sandbox();
    Ask ask;
    ask.value = label_value(*cfg_, sandbox);
    if (ask.value.empty() && cfg_->require_label) {
      return done(HookOutcome::answered(deny_response(
          "FAILED_PRECONDITION", "quota " + cfg_->label + ": the sandbox has no label \"" + cfg_->label + "\"")));
    }
    if (ask.value.empty() && !cfg_->count_missing_label) return done(HookOutcome::answered(allow_response()));
    ask.id = request->sandbox_id().empty() ? sandbox.id() : request->sandbox_id();
    auto ov = cfg_->overrides.find(ask.value);
    ask.limit = ov != cfg_->overrides.end() ? ov->second : cfg_->max;
    ask.reserve = rpc == "CreateSandbox";

    InvocationPtr inv;
    ListCallPtr list;
    HookOutcome outcome;
    {
      std::lock_guard lock(state_->mu);
      if (state_->stopped) {
        outcome = HookOutcome::failed(grpc::StatusCode::UNAVAILABLE, "hook stopped");
      } else if (!ctx_.list_sandboxes) {
        outcome =
            HookOutcome::failed(grpc::StatusCode::UNAVAILABLE, "cannot count sandboxes: no delegate to list them");
      } else {
        Pending& p = state_->pending[ask.id];
        p.value = ask.value;
        p.others++;
        if (state_->watch_answers(cfg_->report_grace, cfg_->label)) {
          outcome = decide_from_watch(*state_, *cfg_, ask);
        } else {
          inv = std::make_shared<Invocation>();
          inv->done = std::move(done);
          inv->ask = std::move(ask);
          list = wait_for_list(inv);
        }
      }
    }
    if (!inv) return done(std::move(outcome));

    options.cancel->on_cancel([weak_state = std::weak_ptr<State>(state_), weak_inv = std::weak_ptr<Invocation>(inv)] {
      auto state = weak_state.lock();
      auto inv = weak_inv.lock();
      if (state && inv) fail(*state, inv, grpc::StatusCode::CANCELLED, "cancelled");
    });
    if (!list) return;  // joined the seed list in flight
    ctx_.list_sandboxes(options.deadline, [state = state_, list, cfg = cfg_](
                                              grpc::Status status, std::vector<computepb::DriverSandbox> listed) {
      listed_for(*state, list, *cfg, status, listed);
    });
  }

  void stop() override {
    std::vector<HookDone> ended;
    {
      std::lock_guard lock(state_->mu);
      state_->stopped = true;
      for (const auto& inv : std::set<InvocationPtr>(state_->invocations)) ended.push_back(state_->end(inv));
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
        if (inv->ask.id == sandbox_id) ended.push_back(state_->end(inv));
      }
      release(sandbox_id, delegate_committed);
    }
    for (auto& done : ended) done(HookOutcome::failed(grpc::StatusCode::CANCELLED, "call finished"));
  }

  nlohmann::json describe() const override {
    std::lock_guard lock(state_->mu);
    size_t reserved = 0;
    for (const auto& [_, p] : state_->pending) reserved += p.reservations > 0 ? 1 : 0;
    const auto& w = state_->watch;
    bool from_watch = w.live && w.seed == WatchIndex::Seed::kSeeded;
    return {{"label", cfg_->label},
            {"max", cfg_->max},
            {"reserved", reserved},
            {"counting", from_watch ? "watch" : "list"},
            {"indexed", w.present.size()}};
  }

 private:
  static SandboxFeed::Subscription subscribe(const std::shared_ptr<SandboxFeed>& feed, std::shared_ptr<State> state,
                                             std::shared_ptr<const QuotaConfig> cfg) {
    SandboxFeed::Observer observer;
    observer.event = [state, cfg](const computepb::WatchSandboxesEvent& event) {
      if (event.has_sandbox()) {
        const auto& sb = event.sandbox().sandbox();
        std::optional<std::string> value;
        if (!sb.status().deleting()) value = label_value(*cfg, sb);
        std::lock_guard lock(state->mu);
        state->on_event(sb.id(), std::move(value));
      } else if (event.has_deleted()) {
        std::lock_guard lock(state->mu);
        state->on_event(event.deleted().sandbox_id(), std::nullopt);
      }
    };
    observer.health = [state](bool live) {
      std::lock_guard lock(state->mu);
      // Whatever the index knew may have missed events: seed again, by a
      // list begun after the watch is live again.
      state->watch.live = live;
      state->watch.reset();
    };
    return SandboxFeed::subscribe(feed, std::move(observer));
  }

  // Under state_->mu. Joins the seed list in flight (nullptr back), or
  // hands back a new list to start: a seed when the feed is live.
  ListCallPtr wait_for_list(const InvocationPtr& inv) {
    auto& w = state_->watch;
    state_->invocations.insert(inv);
    if (w.live && w.seeding) {
      inv->list_seq = w.seeding->start_seq;
      w.seeding->waiters.push_back(inv);
      return nullptr;
    }
    auto list = std::make_shared<ListCall>();
    list->start_seq = inv->list_seq = state_->seq;
    list->waiters.push_back(inv);
    state_->lists.insert(list->start_seq);
    if (w.live) {
      w.seed = WatchIndex::Seed::kSeeding;
      w.seeding = list;
    }
    return list;
  }

  // Pairs the end of one call with what its invocation registered. A
  // commit is remembered for the lists in flight that began before it,
  // and enters the index unless the watch already spoke about the id.
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
    if (committed) {
      state_->committed[id] = {p.value, ++state_->seq};
      if (!p.reported) state_->note_unreported_commit(id, p.value);
    }
    if (p.reservations == 0 && p.others == 0) state_->pending.erase(it);
    state_->recount(id);
    state_->prune();
  }

  static void fail(State& state, const InvocationPtr& inv, grpc::StatusCode code, std::string message) {
    HookDone done;
    {
      std::lock_guard lock(state.mu);
      done = state.end(inv);
    }
    if (done) done(HookOutcome::failed(code, std::move(message)));
  }

  static void listed_for(State& state, const ListCallPtr& list, const QuotaConfig& cfg, const grpc::Status& status,
                         const std::vector<computepb::DriverSandbox>& listed) {
    std::vector<std::pair<HookDone, HookOutcome>> answers;
    {
      std::lock_guard lock(state.mu);
      state.lists.erase(state.lists.find(list->start_seq));
      bool seeded = false;
      if (state.watch.seeding == list) {
        state.watch.seeding.reset();
        if (status.ok()) {
          state.land_seed(list, cfg, listed);
          seeded = true;
        } else {
          state.watch.reset();  // the next validation tries again
        }
      }
      for (const auto& inv : list->waiters) {
        HookDone done = state.end(inv);
        if (!done) continue;
        answers.emplace_back(std::move(done), !status.ok() ? list_failed(status)
                                              : seeded     ? decide_from_watch(state, cfg, inv->ask)
                                                           : decide_from_list(state, cfg, *inv, listed));
      }
      list->waiters.clear();
      state.prune();
    }
    for (auto& [done, outcome] : answers) done(std::move(outcome));
  }

  static HookOutcome list_failed(const grpc::Status& status) {
    auto code = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? grpc::StatusCode::DEADLINE_EXCEEDED
                                                                           : grpc::StatusCode::UNAVAILABLE;
    return HookOutcome::failed(code, "cannot count sandboxes: ListSandboxes: " + status.error_message());
  }

  std::shared_ptr<const QuotaConfig> cfg_;  // shared with list callbacks and the feed
  BuiltinContext ctx_;
  std::shared_ptr<State> state_;
  SandboxFeed::Subscription subscription_;
};

Result<std::unique_ptr<Hook>> make_quota(const HookSpec& spec, const BuiltinContext& ctx) {
  std::vector<std::string> errors;
  TomlSection config(config_table(spec), spec.config_key, errors);
  config.allow_only({"label", "max", "overrides", "count_missing_label", "require_label", "report_grace_ms"});
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
  if (auto grace = config.integer("report_grace_ms", 1, 3'600'000))
    cfg.report_grace = std::chrono::milliseconds(*grace);
  if (!errors.empty()) return config_error(errors);
  return std::unique_ptr<Hook>(new QuotaHook(spec.name, std::move(cfg), ctx));
}

}  // namespace

BuiltinKind quota_builtin() {
  return {kKind, kPhases, &make_quota};
}

}  // namespace owrap
