#include "hooks/hook.h"

#include <array>

namespace owrap {

namespace {
constexpr std::array<std::string_view, kHookPhaseCount> kPhaseNames = {
    "prepare",      "validate",    "after_create",  "on_create_failed", "before_stop", "after_stop",
    "before_start", "after_start", "before_delete", "after_delete",     "after_ready",
};
}  // namespace

std::string_view phase_name(HookPhase phase) {
  return kPhaseNames[static_cast<size_t>(phase)];
}

std::optional<HookPhase> phase_from_name(std::string_view name) {
  for (size_t i = 0; i < kPhaseNames.size(); i++) {
    if (kPhaseNames[i] == name) return static_cast<HookPhase>(i);
  }
  return std::nullopt;
}

const std::vector<HookPhase>& all_phases() {
  static const std::vector<HookPhase> phases = [] {
    std::vector<HookPhase> v;
    for (size_t i = 0; i < kHookPhaseCount; i++) v.push_back(static_cast<HookPhase>(i));
    return v;
  }();
  return phases;
}

bool is_decision_phase(HookPhase phase) {
  switch (phase) {
    case HookPhase::kPrepare:
    case HookPhase::kValidate:
    case HookPhase::kBeforeStop:
    case HookPhase::kBeforeStart:
    case HookPhase::kBeforeDelete:
      return true;
    default:
      return false;
  }
}

std::string phase_list(const PhaseSet& phases) {
  std::string out;
  for (HookPhase p : all_phases()) {
    if (!phases.test(static_cast<size_t>(p))) continue;
    if (!out.empty()) out += ", ";
    out += phase_name(p);
  }
  return out;
}

void CancelSignal::cancel() {
  std::vector<std::function<void()>> run;
  {
    std::lock_guard lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    run.swap(callbacks_);
  }
  for (auto& f : run) f();
}

bool CancelSignal::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

void CancelSignal::on_cancel(std::function<void()> f) {
  {
    std::lock_guard lock(mu_);
    if (!cancelled_) {
      callbacks_.push_back(std::move(f));
      return;
    }
  }
  f();
}

}  // namespace owrap
