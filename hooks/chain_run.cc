#include "hooks/chain_run.h"

#include "common/log.h"
#include "plan/sandbox_json.h"

#include <algorithm>

namespace owrap {

namespace {

nlohmann::json patches_to_json(const hookpb::HookResponse& response) {
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& p : response.patches()) {
    nlohmann::json op = {{"op", p.op()}, {"path", p.path()}};
    if (!p.from().empty()) op["from"] = p.from();
    if (p.has_value()) op["value"] = value_to_json(p.value());
    ops.push_back(std::move(op));
  }
  return ops;
}

// A reply the protocol does not allow, before its content is judged.
grpc::Status check_reply(const HookSpec& spec, HookPhase phase, const HookOutcome& outcome) {
  const hookpb::HookResponse& response = outcome.response;
  if (!response.status_code().empty() && !status_code_from_name(response.status_code())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "answered an unknown status_code \"" + response.status_code() + "\"");
  }
  // patch_count() and the apply read one way alone (prepared, else
  // patch_json, else the response's): the others would be dropped without a word.
  if (outcome.patches_twice()) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "answered patches more than one way (a hook's bug: JSON, prepared or in the response, never two)");
  }
  if (phase != HookPhase::kPrepare && outcome.patch_count() > 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "answered patches in phase " + std::string(phase_name(phase)) + " (only prepare may patch)");
  }
  if (outcome.patch_count() > spec.max_patches) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "answered " + std::to_string(outcome.patch_count()) +
                                                                " patch operations; the limit is " +
                                                                std::to_string(spec.max_patches));
  }
  return grpc::Status::OK;
}

grpc::StatusCode failure_code(Rpc rpc, const grpc::Status& failure) {
  // The gateway shows the user only FAILED_PRECONDITION (and ALREADY_EXISTS)
  // from a create; Stop/Start/Delete keep the transport's code so the
  // gateway's workers can tell a timeout from a refusal.
  if (rpc == Rpc::kCreateSandbox || rpc == Rpc::kValidateSandboxCreate) return grpc::StatusCode::FAILED_PRECONDITION;
  switch (failure.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::UNAVAILABLE:
      return failure.error_code();
    default:
      return grpc::StatusCode::FAILED_PRECONDITION;
  }
}

}  // namespace

ChainRun::ChainRun(HookChain& chain, Rpc rpc, std::string sandbox_id, std::optional<Plan> plan,
                   google::protobuf::Struct wrapper_config, std::vector<ChainStep> steps)
    : chain_(chain),
      rpc_(rpc),
      sandbox_id_(std::move(sandbox_id)),
      plan_(std::move(plan)),
      wrapper_config_(std::move(wrapper_config)),
      steps_(std::move(steps)),
      budget_end_(std::chrono::steady_clock::now() + chain.options_.config.budget) {}

bool ChainRun::start(std::function<void(grpc::Status)> on_done, std::function<void(std::string)> on_progress) {
  on_done_ = std::move(on_done);
  on_progress_ = std::move(on_progress);
  bool ended = advance();
  // A callback that holds the run must not keep it alive once unused.
  if (ended) {
    std::lock_guard lock(mu_);
    on_done_ = nullptr;
  }
  return ended;
}

grpc::Status ChainRun::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

void ChainRun::keep(HookVerdict verdict) {
  if (keep_verdicts_) verdicts_.push_back(std::move(verdict));
}

std::vector<HookVerdict> ChainRun::verdicts() const {
  std::lock_guard lock(mu_);
  return verdicts_;
}

std::chrono::steady_clock::time_point ChainRun::deadline_for(const ChainStep& step) const {
  const HookSpec& spec = chain_.hooks_[step.hook].spec;
  auto own = std::chrono::steady_clock::now() + spec.timeout;
  if (spec.mode == HookMode::kAudit) return std::min(own, caller_deadline);
  return std::min({own, budget_end_, caller_deadline});
}

std::shared_ptr<hookpb::HookRequest> ChainRun::request_for(const ChainStep& step,
                                                           std::chrono::steady_clock::time_point deadline) const {
  const ConfiguredHook& h = chain_.hooks_[step.hook];
  auto request =
      chain_.base_request(h, step.phase, rpc_, sandbox_id_, wrapper_config_, plan_ ? plan_->shared_view() : nullptr);
  request->set_traceparent(traceparent);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  request->set_deadline_ms(std::max<int64_t>(left.count(), 0));
  if (step.phase == HookPhase::kValidate && plan_ && h.hook->reads_path_owners()) {
    for (const auto& [path, owner] : plan_->owners()) (*request->mutable_path_owners())[path] = owner;
  }
  return request;
}

bool ChainRun::advance() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (ended_ || given_up_locked()) return true;
    if (next_ >= steps_.size()) {
      end(grpc::Status::OK);
      return true;
    }
    const ChainStep& step = steps_[next_];
    const ConfiguredHook& h = chain_.hooks_[step.hook];
    invoked_at_.reset();
    if (std::chrono::steady_clock::now() >= budget_end_) {
      auto budget = chain_.options_.config.budget.count();
      HookOutcome skipped = HookOutcome::failed(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          "did not run: the hook budget of " + std::to_string(budget) + " ms (wrapper.hook_budget_ms) was used up");
      if (!judge(step, skipped)) {
        return true;
      }
      next_++;
      continue;
    }
    auto deadline = deadline_for(step);
    auto request = request_for(step, deadline);
    if (std::find(invoked_.begin(), invoked_.end(), step.hook) == invoked_.end()) invoked_.push_back(step.hook);
    invoke_ = Invoke::kInvoking;
    invoked_at_ = std::chrono::steady_clock::now();
    InvokeOptions options;
    options.deadline = deadline;
    options.cancel = cancel;
    options.cq = cq;
    lock.unlock();
    if (on_progress_) on_progress_(label(step));
    h.hook->invoke(std::move(request), options, [self = shared_from_this(), step_no = next_](HookOutcome outcome) {
      self->on_outcome(step_no, std::move(outcome));
    });
    lock.lock();
    if (invoke_ == Invoke::kInvoking) {
      invoke_ = Invoke::kWaiting;  // on_outcome goes on from the hook's thread
      return false;
    }
    invoke_ = Invoke::kIdle;
    deliver_close_locked();
    // The call may have given up while the hook answered on this thread:
    // its thread reads the plan from then on, so nothing is judged or applied.
    if (given_up_locked()) return true;
    // Judged where it lies (the next answer replaces it): a move of an
    // outcome costs.
    if (!judge(step, outcome_)) return true;
    next_++;
  }
}

bool ChainRun::given_up_locked() {
  if (!cancel->cancelled() && !close_pending_) return false;
  end(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"));
  return true;
}

void ChainRun::on_outcome(size_t step_no, HookOutcome outcome) {
  std::unique_lock lock(mu_);
  if (step_no != next_ || (invoke_ != Invoke::kInvoking && invoke_ != Invoke::kWaiting)) {
    // A hook that answers twice must not answer for the step after it.
    lock.unlock();
    log_warn("hook answered an invocation that had already ended; ignored",
             {{"hook", chain_.hooks_[steps_[step_no].hook].hook->name()},
              {"phase", phase_name(steps_[step_no].phase)},
              {"sandbox_id", sandbox_id_}});
    return;
  }
  if (invoke_ == Invoke::kInvoking) {  // answered inside invoke(): advance() goes on
    outcome_ = std::move(outcome);
    invoke_ = Invoke::kAnswered;
    return;
  }
  invoke_ = Invoke::kIdle;
  deliver_close_locked();
  // The call moved on; nothing is judged or logged as the hook's failure.
  if (given_up_locked()) return;
  bool go_on = judge(steps_[next_], outcome);
  if (go_on) next_++;
  lock.unlock();
  if (go_on && !advance()) return;
  // The call may have moved on (cancelled, timed out): its resume is then
  // ignored, safely.
  // Released once used: a callback that holds the run must not keep it.
  auto done = std::move(on_done_);
  on_done_ = nullptr;
  if (done) done(status());
}

bool ChainRun::judge(const ChainStep& step, HookOutcome& outcome) {
  const ConfiguredHook& h = chain_.hooks_[step.hook];
  HookCounters& counters = *chain_.counters_[step.hook];
  counters.invocations++;
  const bool audit = h.spec.mode == HookMode::kAudit;
  if (audit && invoked_at_) budget_end_ += std::chrono::steady_clock::now() - *invoked_at_;
  invoked_at_.reset();
  HookVerdict verdict{h.hook->name(), std::string(phase_name(step.phase)), "allowed", "", {}};
  const hookpb::HookResponse& response = outcome.response;
  grpc::Status failure = outcome.failure;
  if (failure.ok()) failure = check_reply(h.spec, step.phase, outcome);
  // Built only for a line that is written: most invocations allow quietly.
  auto fields = [&] {
    nlohmann::json f = {{"hook", h.hook->name()},
                        {"phase", phase_name(step.phase)},
                        {"rpc", rpc_name(rpc_)},
                        {"sandbox_id", sandbox_id_}};
    for (const auto& [k, v] : response.log_annotations()) f["annotations"][k] = v;
    if (!verdict.reason.empty()) f["reason"] = verdict.reason;
    return f;
  };
  if (failure.ok() && is_decision_phase(step.phase) && !response.allowed()) {
    counters.denials++;
    verdict.reason = response.reason().empty() ? "no reason given" : response.reason();
    if (audit) {
      counters.audit_findings++;
      verdict.verdict = "audit_denied";
      log_info("audit: hook would deny the call", fields());
      keep(std::move(verdict));
      return true;
    }
    verdict.verdict = "denied";
    log_info("hook denied the call", fields());
    keep(verdict);
    end(grpc::Status(refusal_code(rpc_, response.status_code()),
                     "hook \"" + h.hook->name() + "\" denied " + std::string(rpc_name(rpc_)) + ": " + verdict.reason));
    return false;
  }
  if (failure.ok() && step.phase == HookPhase::kPrepare && outcome.patch_count() > 0) {
    if (outcome.prepared) {
      apply_prepared(step, *outcome.prepared, verdict, failure);
    } else {
      nlohmann::json patches = outcome.patch_json ? std::move(*outcome.patch_json) : patches_to_json(response);
      apply_patches(step, patches, verdict, failure);
    }  // on a refusal, failure says why; judged below
  }
  if (!failure.ok()) return fail_step(step, failure, verdict);
  verdict.reason = response.reason();
  if (Logger::instance().enabled(LogLevel::kDebug)) log_debug("hook allowed the call", fields());
  keep(std::move(verdict));
  return true;
}

bool ChainRun::apply_patches(const ChainStep& step, const nlohmann::json& patches, HookVerdict& verdict,
                             grpc::Status& failure) {
  const ConfiguredHook& h = chain_.hooks_[step.hook];
  if (!plan_) return true;
  PatchRules rules = chain_.rules_for(h.spec);
  if (h.spec.mode == HookMode::kAudit) {
    auto preview = plan_->preview(h.hook->name(), patches, h.spec.may_override, rules);
    if (!preview) {
      failure = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, preview.error());
      return false;
    }
    for (const auto& c : preview.value()) {
      log_info("audit: hook would patch the plan (not applied)",
               {{"hook", c.hook}, {"op", c.op}, {"path", c.path}, {"sandbox_id", sandbox_id_}});
      log_debug("audit: patch value", {{"hook", c.hook}, {"path", c.path}, {"value", c.value}});
      verdict.changed_paths.push_back(c.path);
    }
    if (!preview.value().empty()) chain_.counters_[step.hook]->audit_findings++;
    return true;
  }
  size_t before = plan_->changes().size();
  if (grpc::Status s = plan_->apply(h.hook->name(), patches, h.spec.may_override, rules); !s.ok()) {
    failure = s;
    return false;
  }
  log_changes(before, verdict);
  return true;
}

bool ChainRun::apply_prepared(const ChainStep& step, PreparedPatches& ops, HookVerdict& verdict,
                              grpc::Status& failure) {
  const ConfiguredHook& h = chain_.hooks_[step.hook];
  if (!plan_) return true;
  if (h.spec.mode == HookMode::kAudit) return apply_patches(step, prepared_to_json(ops), verdict, failure);
  size_t before = plan_->changes().size();
  if (grpc::Status s = plan_->apply_prepared(h.hook->name(), ops, h.spec.may_override, chain_.rules_for(h.spec));
      !s.ok()) {
    failure = s;
    return false;
  }
  log_changes(before, verdict);
  return true;
}

void ChainRun::log_changes(size_t before, HookVerdict& verdict) const {
  const auto& changes = plan_->changes();
  // The fields are built only for lines that are written.
  const bool info = Logger::instance().enabled(LogLevel::kInfo);
  const bool debug = Logger::instance().enabled(LogLevel::kDebug);
  for (size_t i = before; i < changes.size(); i++) {
    if (info) {
      log_info(
          "hook patched the plan",
          {{"hook", changes[i].hook}, {"op", changes[i].op}, {"path", changes[i].path}, {"sandbox_id", sandbox_id_}});
    }
    if (debug) {
      log_debug("patch value", {{"hook", changes[i].hook}, {"path", changes[i].path}, {"value", changes[i].value}});
    }
    if (keep_verdicts_) verdict.changed_paths.push_back(changes[i].path);
  }
}

bool ChainRun::fail_step(const ChainStep& step, const grpc::Status& failure, HookVerdict& verdict) {
  const ConfiguredHook& h = chain_.hooks_[step.hook];
  HookCounters& counters = *chain_.counters_[step.hook];
  counters.failures++;
  std::string message = label(step) + ": " + failure.error_message();
  nlohmann::json fields = {{"hook", h.hook->name()},
                           {"phase", phase_name(step.phase)},
                           {"rpc", rpc_name(rpc_)},
                           {"sandbox_id", sandbox_id_},
                           {"error", failure.error_message()}};
  verdict.reason = failure.error_message();
  if (h.spec.mode == HookMode::kAudit) {
    counters.audit_findings++;
    verdict.verdict = "audit_failed";
    log_warn("audit: hook failed (not enforced)", fields);
    keep(std::move(verdict));
    return true;
  }
  if (h.spec.failure_policy == FailurePolicy::kFailOpen) {
    counters.failed_open++;
    verdict.verdict = "failed_open";
    log_warn("hook failed; fail_open lets the call pass", fields);
    keep(std::move(verdict));
    return true;
  }
  verdict.verdict = "failed";
  log_warn("hook failed; fail_closed refuses the call", fields);
  keep(std::move(verdict));
  end(grpc::Status(failure_code(rpc_, failure), message + " (failure_policy fail_closed)"));
  return false;
}

void ChainRun::end(grpc::Status status) {
  ended_ = true;
  status_ = std::move(status);
}

void ChainRun::close(bool committed) {
  std::lock_guard lock(mu_);
  close_pending_ = true;
  committed_ = committed;
  if (invoke_ == Invoke::kIdle || invoke_ == Invoke::kAnswered) deliver_close_locked();
}

void ChainRun::deliver_close_locked() {
  if (!close_pending_ || closed_) return;
  closed_ = true;
  for (size_t i : invoked_) chain_.hooks_[i].hook->call_finished(sandbox_id_, committed_);
}

}  // namespace owrap
