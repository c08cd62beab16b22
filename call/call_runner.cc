#include "call/call_runner.h"

#include <algorithm>

namespace owrap {

namespace {
const std::string kNothing;

std::string stage_label(const std::string& stage, const std::string& progress) {
  return "stage \"" + stage + "\"" + (progress.empty() ? "" : " (" + progress + ")");
}

std::string describe_wait(const std::string& stage, bool deadline, std::chrono::milliseconds timeout) {
  if (deadline) return "the caller's deadline passed while " + stage + " was running";
  return stage + " did not finish within its timeout of " + std::to_string(timeout.count()) + " ms";
}
}  // namespace

CallRunner::CallRunner(CallHost& host, CallState& state, const std::vector<const Stage*>& stages,
                       google::protobuf::Message& request, google::protobuf::Message& response)
    : host_(host), state_(state), stages_(stages), request_(request), response_(response) {}

CallRunner::~CallRunner() {
  // No resume may reach a host that is going away.
  if (token_) token_->abandon();
}

const std::string& CallRunner::waiting_for() const {
  return waiting_ ? waiting_->name : kNothing;
}

std::chrono::milliseconds CallRunner::deadline_margin(std::chrono::steady_clock::duration remaining) {
  auto fifth = std::chrono::duration_cast<std::chrono::milliseconds>(remaining) / 5;
  return std::clamp(fifth, std::chrono::milliseconds(0), std::chrono::milliseconds(20));
}

bool CallRunner::at_deadline(std::chrono::steady_clock::time_point deadline,
                             std::chrono::steady_clock::time_point start, std::chrono::steady_clock::time_point now) {
  if (deadline == std::chrono::steady_clock::time_point::max()) return false;
  return now + deadline_margin(deadline - start) + std::chrono::milliseconds(2) >= deadline;
}

void CallRunner::start() {
  phase_ = Phase::kBefore;
  next_ = 0;
  run();
}

void CallRunner::run() {
  // One phase per event: a delegate that answers from within call_delegate()
  // has already moved the call on.
  if (phase_ == Phase::kBefore)
    run_before();
  else if (phase_ == Phase::kAfter)
    run_after();
}

void CallRunner::run_before() {
  while (next_ < stages_.size()) {
    const Stage& stage = *stages_[next_];
    if (!stage.before) {
      next_++;
      continue;
    }
    before_ran_ = next_ + 1;
    if (!step(stage, stage.before, request_)) return;
  }
  if (phase_ != Phase::kBefore) return;  // a step failed the call
  if (cancelled_)
    return fail(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled by the caller"), DelegateOutcome::kNotCalled);
  phase_ = Phase::kDelegate;
  host_.call_delegate();
}

void CallRunner::run_after() {
  // The response passes the stages in reverse order, as in Envoy's encoders.
  while (next_ > 0) {
    const Stage& stage = *stages_[next_ - 1];
    if (!stage.after) {
      next_--;
      continue;
    }
    if (!step(stage, stage.after, response_)) return;
  }
  if (phase_ == Phase::kAfter) finish(grpc::Status::OK);
}

bool CallRunner::step(const Stage& stage, const Stage::Step& fn, google::protobuf::Message& message) {
  std::shared_ptr<ResumeToken> token = spare_ ? std::move(spare_) : std::make_shared<ResumeToken>(&host_);
  StepResult result = fn(state_, message, Resume(token));
  if (result.is_suspended()) {
    token_ = std::move(token);
    suspend(stage, result.timeout());
    return false;
  }
  // A quick step that kept no copy of its handle and never resumed leaves a
  // token as good as new: the next step gets it instead of an allocation.
  if (token->detach_or_rearm(&host_, token.use_count() == 1)) spare_ = std::move(token);
  if (!result.status().ok()) {
    fail(result.status(), phase_ == Phase::kAfter ? outcome_ : DelegateOutcome::kNotCalled);
    return false;
  }
  if (phase_ == Phase::kBefore)
    next_++;
  else
    next_--;
  return true;
}

void CallRunner::suspend(const Stage& stage, std::chrono::milliseconds timeout) {
  waiting_ = &stage;
  waiting_timeout_ = timeout;
  auto now = std::chrono::steady_clock::now();
  auto at = now + timeout;
  deadline_governs_ = false;
  if (state_.deadline != std::chrono::steady_clock::time_point::max()) {
    auto by_deadline = state_.deadline - deadline_margin(state_.deadline - now);
    if (by_deadline < at) {
      at = by_deadline;
      deadline_governs_ = true;
    }
  }
  host_.arm_timer(at);
}

void CallRunner::stop_waiting() {
  host_.cancel_timer();
  token_.reset();
  waiting_ = nullptr;
}

void CallRunner::on_resumed() {
  // A resume posted by a step that then said "done" arrives stale: only a
  // resume of the suspension now waiting counts.
  if (!token_ || !token_->resumed()) return;
  grpc::Status status = token_->take_status();
  stop_waiting();
  if (cancelled_) return fail(cancel_reason_, phase_ == Phase::kAfter ? outcome_ : DelegateOutcome::kNotCalled);
  if (!status.ok()) return fail(status, phase_ == Phase::kAfter ? outcome_ : DelegateOutcome::kNotCalled);
  if (phase_ == Phase::kBefore)
    next_++;
  else
    next_--;
  run();
}

void CallRunner::on_timer() {
  if (!token_ || !token_->abandon()) return;  // nothing waits, or a resume is on its way
  std::string message =
      describe_wait(stage_label(waiting_->name, token_->progress()), deadline_governs_, waiting_timeout_);
  stop_waiting();
  fail(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, message),
       phase_ == Phase::kAfter ? outcome_ : DelegateOutcome::kNotCalled);
}

void CallRunner::on_cancelled(const grpc::Status& why) {
  if (phase_ == Phase::kDone || cancelled_) return;
  cancelled_ = true;
  cancel_reason_ = why;
  // A delegate call in flight is cancelled with the caller (the calls are
  // linked); its answer still arrives and decides the outcome.
  if (!token_ || !token_->abandon()) return;
  std::string stage = stage_label(waiting_->name, token_->progress());
  stop_waiting();
  fail(grpc::Status(why.error_code(), why.error_message() + " while " + stage + " was running"),
       phase_ == Phase::kAfter ? outcome_ : DelegateOutcome::kNotCalled);
}

void CallRunner::on_delegate_done(const grpc::Status& status, bool may_have_reached) {
  if (phase_ != Phase::kDelegate) return;
  outcome_ = classify_delegate_answer(status, may_have_reached);
  if (!status.ok()) return fail(status, outcome_);
  phase_ = Phase::kAfter;
  next_ = stages_.size();
  run_after();
}

void CallRunner::fail(const grpc::Status& status, DelegateOutcome outcome) {
  if (phase_ == Phase::kDone) return;
  phase_ = Phase::kDone;
  for (size_t i = before_ran_; i-- > 0;) {
    const Stage& stage = *stages_[i];
    if (stage.compensate) stage.compensate(state_, status, outcome);
  }
  host_.finish(status);
  notify_finished(status, outcome);
}

void CallRunner::finish(const grpc::Status& status) {
  phase_ = Phase::kDone;
  host_.finish(status);
  notify_finished(status, outcome_);
}

void CallRunner::notify_finished(const grpc::Status& status, DelegateOutcome outcome) {
  for (size_t i = 0; i < stages_.size(); i++) {
    const Stage& stage = *stages_[i];
    bool ran = i < before_ran_ || !stage.before;
    if (stage.finished && ran) stage.finished(state_, status, outcome);
  }
}

}  // namespace owrap
