// One call's pass through the hook chain's before-phases: hook after hook,
// each possibly on another thread, never on the call's own. Builtin hooks
// answer inside invoke() and the run goes on at once; a hook that answers
// later continues the run on its own thread, and the end of the run resumes
// the call (on the call's queue). The run never touches the call's
// messages: it works on its Plan, which the "hooks.apply" stage writes
// back on the call's thread.
#pragma once

#include "hooks/hook_chain.h"

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace owrap {

struct ChainStep {
  size_t hook;  // index into HookChain::hooks()
  HookPhase phase;
};

class ChainRun : public std::enable_shared_from_this<ChainRun> {
 public:
  ChainRun(HookChain& chain, Rpc rpc, std::string sandbox_id, std::optional<Plan> plan,
           google::protobuf::Struct wrapper_config, std::vector<ChainStep> steps);

  // The call's context; set before start().
  std::string traceparent;
  grpc::CompletionQueue* cq = nullptr;
  std::chrono::steady_clock::time_point caller_deadline = std::chrono::steady_clock::time_point::max();
  std::shared_ptr<CancelSignal> cancel = std::make_shared<CancelSignal>();

  // Runs the steps. True when the run ended within this call (status()
  // says how); otherwise `on_done` runs once, on the thread of the hook
  // that answered last, unless the run was cancelled. `on_progress` is
  // told which hook runs, for timeout messages.
  bool start(std::function<void(grpc::Status)> on_done, std::function<void(std::string)> on_progress);
  // The status the run ended with (valid once it ended).
  grpc::Status status() const;

  // The call ended: builtin hooks that ran learn it (call_finished), now
  // or, if a hook is still being invoked, as soon as it answers.
  void close(bool committed);

  Rpc rpc() const { return rpc_; }
  const std::string& sandbox_id() const { return sandbox_id_; }
  // Create/Validate only; the run owns it until it ended.
  Plan* plan() { return plan_ ? &*plan_ : nullptr; }
  const Plan* plan() const { return plan_ ? &*plan_ : nullptr; }
  const google::protobuf::Struct& wrapper_config() const { return wrapper_config_; }
  std::vector<HookVerdict> verdicts() const;
  // Keeps each hook's verdict for verdicts() (the plan tool's report); a
  // call's run does not, so it copies no changed paths. Before start().
  void keep_verdicts() { keep_verdicts_ = true; }
  bool has_steps() const { return !steps_.empty(); }

 private:
  enum class Invoke { kIdle, kInvoking, kWaiting, kAnswered };
  bool advance();
  // The answer of steps_[step_no]; a second answer to a step is ignored.
  void on_outcome(size_t step_no, HookOutcome outcome);
  // Judges the answer of the current step; false when the run ends here.
  bool judge(const ChainStep& step, HookOutcome& outcome);
  bool fail_step(const ChainStep& step, const grpc::Status& failure, HookVerdict& verdict);
  bool apply_patches(const ChainStep& step, const nlohmann::json& patches, HookVerdict& verdict, grpc::Status& failure);
  bool apply_prepared(const ChainStep& step, PreparedPatches& ops, HookVerdict& verdict, grpc::Status& failure);
  // Logs the plan's changes from index `before` on and lists their paths in `verdict`.
  void log_changes(size_t before, HookVerdict& verdict) const;
  std::shared_ptr<hookpb::HookRequest> request_for(const ChainStep& step,
                                                   std::chrono::steady_clock::time_point deadline) const;
  std::chrono::steady_clock::time_point deadline_for(const ChainStep& step) const;
  // 'hook "a", phase validate': what the call says runs, and how a failure names it.
  const std::string& label(const ChainStep& step) const {
    return chain_.labels_[step.hook][static_cast<size_t>(step.phase)];
  }
  void end(grpc::Status status);
  // Ends the run if the call was cancelled or ended (close()); true then.
  bool given_up_locked();
  void deliver_close_locked();

  HookChain& chain_;
  const Rpc rpc_;
  const std::string sandbox_id_;
  std::optional<Plan> plan_;
  const google::protobuf::Struct wrapper_config_;
  const std::vector<ChainStep> steps_;
  // Moved later by the time audit hooks take: an audit hook never uses up
  // the budget of the hooks that enforce.
  std::chrono::steady_clock::time_point budget_end_;
  std::optional<std::chrono::steady_clock::time_point> invoked_at_;
  std::function<void(grpc::Status)> on_done_;
  std::function<void(std::string)> on_progress_;

  mutable std::mutex mu_;
  size_t next_ = 0;
  Invoke invoke_ = Invoke::kIdle;
  HookOutcome outcome_;
  bool ended_ = false;
  grpc::Status status_;
  std::vector<HookVerdict> verdicts_;
  bool keep_verdicts_ = false;
  void keep(HookVerdict verdict);
  std::vector<size_t> invoked_;  // hooks invoked, for call_finished
  bool close_pending_ = false;
  bool closed_ = false;
  bool committed_ = false;
};

}  // namespace owrap
