#include "hooks/hook_chain.h"

#include "common/grpc_util.h"
#include "common/inline_arena.h"
#include "common/log.h"
#include "common/secrets.h"
#include "hooks/chain_run.h"

#include <algorithm>
#include <cstddef>

namespace owrap {

namespace {

bool ready_now(const v1::DriverSandbox& sandbox) {
  for (const auto& c : sandbox.status().conditions()) {
    if (c.type() == "Ready") return c.status() == "True";
  }
  return false;
}

// What a hook request lives in: its arena, whose first block is part of
// the holder (a request costs one allocation), and the view it is lent.
struct RequestHolder {
  InlineArena<1024> memory;
  std::shared_ptr<const v1::DriverSandbox> sandbox;
};

}  // namespace

std::optional<grpc::StatusCode> status_code_from_name(const std::string& name) {
  auto code = parse_status_code(name);
  if (code == grpc::StatusCode::OK) return std::nullopt;
  return code;
}

grpc::StatusCode refusal_code(Rpc rpc, const std::string& hook_code) {
  auto code = status_code_from_name(hook_code);
  switch (rpc) {
    case Rpc::kCreateSandbox:
      // Everything else becomes INTERNAL "create sandbox failed" at the gateway.
      if (code == grpc::StatusCode::ALREADY_EXISTS) return *code;
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Rpc::kValidateSandboxCreate:
      if (code == grpc::StatusCode::INVALID_ARGUMENT) return *code;
      return grpc::StatusCode::FAILED_PRECONDITION;
    default:
      return code.value_or(grpc::StatusCode::FAILED_PRECONDITION);
  }
}

// A fixed list: every create asks, and a vector would be allocated and
// freed each time.
std::span<const HookPhase> before_phases(Rpc rpc) {
  static constexpr HookPhase kCreate[] = {HookPhase::kPrepare, HookPhase::kValidate};
  static constexpr HookPhase kStop[] = {HookPhase::kBeforeStop};
  static constexpr HookPhase kStart[] = {HookPhase::kBeforeStart};
  static constexpr HookPhase kDelete[] = {HookPhase::kBeforeDelete};
  switch (rpc) {
    case Rpc::kValidateSandboxCreate:
    case Rpc::kCreateSandbox:
      return kCreate;
    case Rpc::kStopSandbox:
      return kStop;
    case Rpc::kStartSandbox:
      return kStart;
    case Rpc::kDeleteSandbox:
      return kDelete;
    default:
      return {};
  }
}

std::optional<HookPhase> after_phase(Rpc rpc, bool committed) {
  switch (rpc) {
    case Rpc::kCreateSandbox:
      return committed ? HookPhase::kAfterCreate : HookPhase::kOnCreateFailed;
    case Rpc::kStopSandbox:
      return committed ? std::optional(HookPhase::kAfterStop) : std::nullopt;
    case Rpc::kStartSandbox:
      return committed ? std::optional(HookPhase::kAfterStart) : std::nullopt;
    case Rpc::kDeleteSandbox:
      return committed ? std::optional(HookPhase::kAfterDelete) : std::nullopt;
    default:
      return std::nullopt;
  }
}

HookChain::HookChain(HookChainOptions options, std::vector<ConfiguredHook> hooks)
    : options_(std::move(options)),
      hooks_(std::move(hooks)),
      after_(options_.config.after_queue_capacity, options_.config.after_concurrency) {
  for (size_t i = 0; i < hooks_.size(); i++) counters_.push_back(std::make_unique<HookCounters>());
  for (const auto& h : hooks_) {
    auto& labels = labels_.emplace_back();
    for (HookPhase phase : all_phases()) {
      labels[static_cast<size_t>(phase)] = "hook \"" + h.hook->name() + "\", phase " + std::string(phase_name(phase));
    }
  }
  for (const auto& h : hooks_) {
    claimed_.insert(h.spec.name);
    after_ready_ = after_ready_ || h.spec.phases.test(static_cast<size_t>(HookPhase::kAfterReady));
  }
  if (auto p = Protection::make(*v1::DriverSandbox::descriptor(), options_.config.protected_paths)) {
    protection_ = std::make_shared<const Protection>(std::move(p.value()));
  }
}

HookChain::~HookChain() {
  stop();
}

void HookChain::start() {
  for (auto& h : hooks_) h.hook->start();
}

void HookChain::stop() {
  if (stopping_->cancelled()) return;
  stopping_->cancel();
  after_.stop();
  for (auto& h : hooks_) h.hook->stop();
}

std::set<std::string> HookChain::claimed_keys() const {
  return claimed_;
}

void HookChain::set_delegate_version(std::string version) {
  std::lock_guard lock(mu_);
  delegate_version_ = std::move(version);
}

PatchRules HookChain::rules_for(const HookSpec& spec) const {
  PatchRules rules{{}, spec.max_patches, spec.max_reply_bytes, protection_};
  if (!protection_) rules.extra_protected = options_.config.protected_paths;  // made into rules per patch set
  rules.keep_values = Logger::instance().enabled(LogLevel::kDebug);           // only debug lines show them
  return rules;
}

std::vector<Stage> HookChain::stages() {
  RpcSet rpcs = rpc_set(
      {Rpc::kValidateSandboxCreate, Rpc::kCreateSandbox, Rpc::kStopSandbox, Rpc::kStartSandbox, Rpc::kDeleteSandbox});
  std::vector<Stage> out;
  out.push_back(Stage{
      "hooks",
      rpcs,
      [this](CallState& s, google::protobuf::Message& m, const Resume& r) { return before(s, m, r); },
      nullptr,
      nullptr,
      [this](CallState& s, const grpc::Status& answer, DelegateOutcome o) { finished(s, answer, o); },
  });
  // On the call's thread, once the chain ended: the plan reaches the request.
  out.push_back(Stage{
      "hooks.apply",
      rpc_set({Rpc::kValidateSandboxCreate, Rpc::kCreateSandbox}),
      [this](CallState& s, google::protobuf::Message& m, const Resume&) { return apply_plan(s, m); },
      nullptr,
      nullptr,
      nullptr,
  });
  return out;
}

bool HookChain::active(const ConfiguredHook& h, HookPhase phase, const v1::DriverSandbox* sandbox,
                       const google::protobuf::Struct& wrapper_config) const {
  if (!h.spec.phases.test(static_cast<size_t>(phase))) return false;
  switch (h.spec.when.kind) {
    case Activation::Kind::kAlways:
      return true;
    case Activation::Kind::kExtension: {
      if (sandbox == nullptr) return false;
      const auto& labels = sandbox->spec().template_().labels();
      auto it = labels.find("openshell.io/extension." + h.spec.when.extension_key);
      return it != labels.end() && extension_enabled(it->second);
    }
    case Activation::Kind::kRequestConfig:
      return wrapper_config.fields().count(h.spec.name) > 0;
  }
  return false;
}

std::shared_ptr<hookpb::HookRequest> HookChain::base_request(const ConfiguredHook& h, HookPhase phase, Rpc rpc,
                                                             const std::string& sandbox_id,
                                                             const google::protobuf::Struct& wrapper_config,
                                                             std::shared_ptr<const v1::DriverSandbox> sandbox) const {
  // On an arena: made and freed whole, not field by field. An arena never
  // frees what it was lent (the view, the hook's config), and the holder
  // keeps the view alive as long as the request.
  auto holder = std::make_shared_for_overwrite<RequestHolder>();
  holder->sandbox = std::move(sandbox);
  const v1::DriverSandbox* view = holder->sandbox.get();
  auto* message = google::protobuf::Arena::CreateMessage<hookpb::HookRequest>(&holder->memory.arena);
  std::shared_ptr<hookpb::HookRequest> request(std::move(holder), message);
  const bool holds_config = h.spec.config.fields_size() > 0;
  request->set_protocol_version(kHookProtocolVersion);
  request->set_hook(h.spec.name);
  request->set_phase(std::string(phase_name(phase)));
  request->set_rpc(std::string(rpc_name(rpc)));
  request->set_sandbox_id(sandbox_id);
  if (view) {
    request->unsafe_arena_set_allocated_sandbox(const_cast<v1::DriverSandbox*>(view));
  } else {
    request->mutable_sandbox()->set_id(sandbox_id);
  }
  if (holds_config) request->unsafe_arena_set_allocated_config(const_cast<google::protobuf::Struct*>(&h.spec.config));
  auto block = wrapper_config.fields().find(h.spec.name);
  if (block != wrapper_config.fields().end() && block->second.has_struct_value()) {
    *request->mutable_request_config() = block->second.struct_value();
  }
  request->mutable_delegate()->set_name(options_.delegate_name);
  {
    std::lock_guard lock(mu_);
    request->mutable_delegate()->set_version(delegate_version_);
  }
  return request;
}

std::shared_ptr<ChainRun> HookChain::make_run(Rpc rpc, const v1::DriverSandbox* sandbox, const std::string& sandbox_id,
                                              const google::protobuf::Struct& wrapper_config, grpc::Status& error) {
  for (const auto& [key, value] : wrapper_config.fields()) {
    if (claimed_.count(key) && !value.has_struct_value()) {
      error = grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          options_.request_config_path + "." + key + ": must be an object (the request block of hook \"" + key + "\")");
      return nullptr;
    }
  }
  std::vector<ChainStep> steps;
  for (HookPhase phase : before_phases(rpc)) {
    for (size_t i = 0; i < hooks_.size(); i++) {
      if (active(hooks_[i], phase, sandbox, wrapper_config)) steps.push_back({i, phase});
    }
  }
  bool after = false;
  for (bool committed : {true, false}) {
    auto phase = after_phase(rpc, committed);
    for (const auto& h : hooks_) after = after || (phase && active(h, *phase, sandbox, wrapper_config));
  }
  if (steps.empty() && !after) return nullptr;
  std::optional<Plan> plan;
  if (sandbox != nullptr) {
    auto p = Plan::from(*sandbox);
    if (!p) {
      error = grpc::Status(grpc::StatusCode::INTERNAL, "hook chain: cannot build the plan: " + p.error());
      return nullptr;
    }
    plan = std::move(p.value());
  }
  // Stop/Start/Delete name the sandbox; that is all a hook is told.
  return std::make_shared<ChainRun>(*this, rpc, sandbox_id, std::move(plan), wrapper_config, std::move(steps));
}

StepResult HookChain::before(CallState& state, google::protobuf::Message& request, const Resume& resume) {
  const v1::DriverSandbox* sandbox = sandbox_of(state.rpc, request);
  grpc::Status error;
  auto run = make_run(state.rpc, sandbox, state.sandbox_id, state.wrapper_config, error);
  if (!error.ok()) return StepResult::done(error);
  if (!run) return StepResult::done();
  state.hook_run = run;
  run->traceparent = state.traceparent;
  run->cq = state.cq;
  run->caller_deadline = state.deadline;
  resume.on_cancel([cancel = run->cancel] { cancel->cancel(); });
  bool ended = run->start([resume](grpc::Status s) { resume(std::move(s)); },
                          [resume](std::string what) { resume.set_progress(std::move(what)); });
  if (ended) return StepResult::done(run->status());
  // The chain ends itself within the budget; the stage's timer is the
  // backstop, and the caller's deadline still governs.
  return StepResult::suspended(options_.config.budget + std::chrono::milliseconds(500));
}

StepResult HookChain::apply_plan(CallState& state, google::protobuf::Message& request) {
  auto run = std::static_pointer_cast<ChainRun>(state.hook_run);
  if (!run || run->plan() == nullptr || run->plan()->changes().empty()) return StepResult::done();
  v1::DriverSandbox* sandbox = sandbox_of(state.rpc, request);
  if (sandbox == nullptr) return StepResult::done();
  if (grpc::Status s = run->plan()->write_back(*sandbox); !s.ok()) {
    return StepResult::done(
        grpc::Status(grpc::StatusCode::INTERNAL, "hook chain: cannot apply the plan: " + s.error_message()));
  }
  return StepResult::done();
}

void HookChain::finished(CallState& state, const grpc::Status& answer, DelegateOutcome outcome) {
  auto run = std::static_pointer_cast<ChainRun>(state.hook_run);
  if (!run) return;
  bool committed = answer.ok() && outcome == DelegateOutcome::kCommitted;
  // Only a committed create made a sandbox (quota counts it from now on).
  run->close(committed && state.rpc == Rpc::kCreateSandbox);
  auto phase = after_phase(state.rpc, committed);
  if (!phase) return;
  // The delegate's message may echo what it was sent: hooks get it as the
  // caller does, with the request's secrets scrubbed.
  grpc::Status failure(answer.error_code(), redact_secrets(answer.error_message(), state.secrets));
  enqueue_after(*run, *phase, committed ? nullptr : &failure, outcome);
}

void HookChain::enqueue_after(const ChainRun& run, HookPhase phase, const grpc::Status* failure,
                              DelegateOutcome outcome) {
  const Plan* plan = run.plan();
  auto view = plan ? plan->shared_view() : nullptr;
  // Activation is judged on the request as the caller sent it, as for the
  // before-phases: a label a prepare hook adds switches nothing on.
  const v1::DriverSandbox* as_sent = plan ? &plan->original() : nullptr;
  AfterJob job;
  for (size_t i = hooks_.size(); i-- > 0;) {
    const ConfiguredHook& h = hooks_[i];
    if (!active(h, phase, as_sent, run.wrapper_config())) continue;
    auto request = base_request(h, phase, run.rpc(), run.sandbox_id(), run.wrapper_config(), view);
    request->set_traceparent(run.traceparent);
    if (failure) {
      request->mutable_failure()->set_status_code(std::string(status_code_name(failure->error_code())));
      request->mutable_failure()->set_message(failure->error_message());
      request->mutable_failure()->set_outcome(std::string(outcome_name(outcome)));
    }
    job.push_back(AfterInvocation{h.hook.get(), &h.spec, std::move(request)});
  }
  after_.push(std::move(job));
}

void HookChain::sandbox_reported(const v1::DriverSandbox& sandbox) {
  if (!after_ready_ || !ready_now(sandbox)) return;
  {
    std::lock_guard lock(mu_);
    if (!ready_.insert(sandbox.id()).second) return;
  }
  AfterJob job;
  google::protobuf::Struct none;
  std::shared_ptr<const v1::DriverSandbox> view;
  for (size_t i = hooks_.size(); i-- > 0;) {
    const ConfiguredHook& h = hooks_[i];
    if (!active(h, HookPhase::kAfterReady, &sandbox, none)) continue;
    if (!view) view = std::make_shared<const v1::DriverSandbox>(hook_view(sandbox));
    auto request = base_request(h, HookPhase::kAfterReady, Rpc::kWatchSandboxes, sandbox.id(), none, view);
    job.push_back(AfterInvocation{h.hook.get(), &h.spec, std::move(request)});
  }
  after_.push(std::move(job));
}

void HookChain::sandbox_deleted(const std::string& sandbox_id) {
  if (!after_ready_) return;
  std::lock_guard lock(mu_);
  ready_.erase(sandbox_id);
}

nlohmann::json HookChain::effective_chain() const {
  nlohmann::json out = nlohmann::json::object();
  for (const RpcInfo& info : all_rpcs()) {
    nlohmann::json entries = nlohmann::json::array();
    auto before = before_phases(info.rpc);
    std::vector<HookPhase> phases(before.begin(), before.end());
    for (bool committed : {true, false}) {
      if (auto p = after_phase(info.rpc, committed)) phases.push_back(*p);
    }
    if (info.rpc == Rpc::kWatchSandboxes) phases.push_back(HookPhase::kAfterReady);
    for (HookPhase phase : phases) {
      std::vector<const ConfiguredHook*> order;
      for (const auto& h : hooks_) order.push_back(&h);
      if (!is_decision_phase(phase)) std::reverse(order.begin(), order.end());
      for (const ConfiguredHook* h : order) {
        if (h->spec.phases.test(static_cast<size_t>(phase))) {
          entries.push_back(std::string(phase_name(phase)) + ":" + h->spec.name);
        }
      }
    }
    if (!entries.empty()) out[std::string(info.name)] = entries;
  }
  return out;
}

std::string HookChain::summary() const {
  if (hooks_.empty()) return "";
  std::string names;
  for (const auto& h : hooks_) names += (names.empty() ? "" : ", ") + h.spec.name;
  return "hooks: " + names;
}

void HookChain::plan(const v1::DriverSandbox& sandbox, const google::protobuf::Struct& wrapper_config,
                     std::function<void(PlanReport)> done) {
  grpc::Status error;
  auto run = make_run(Rpc::kValidateSandboxCreate, &sandbox, sandbox.id(), wrapper_config, error);
  auto report = [done, sandbox](std::shared_ptr<ChainRun> run, grpc::Status status) {
    PlanReport r;
    r.status = std::move(status);
    r.sandbox = sandbox;
    if (run) {
      r.hooks = run->verdicts();
      if (run->plan()) {
        r.plan = run->plan()->json();
        if (grpc::Status s = run->plan()->write_back(r.sandbox); !s.ok() && r.status.ok()) r.status = s;
      }
    } else if (auto p = Plan::from(sandbox)) {
      r.plan = p.value().json();
    }
    done(std::move(r));
  };
  if (!run) return report(nullptr, error);
  run->keep_verdicts();
  bool ended = run->start([run, report](grpc::Status s) { report(run, std::move(s)); }, nullptr);
  if (ended) report(run, run->status());
}

}  // namespace owrap
