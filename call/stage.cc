#include "call/stage.h"

#include "call/call_runner.h"

namespace owrap {

bool ResumeToken::resume(grpc::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (host_ == nullptr || resumed_) return false;
  resumed_ = true;
  status_ = std::move(status);
  // Under the lock: the call cannot be gone while its host is attached.
  host_->post_resume();
  return true;
}

bool ResumeToken::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

bool ResumeToken::resumed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return resumed_;
}

void ResumeToken::on_cancel(std::function<void()> f) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cancelled_) {
      on_cancel_ = std::move(f);
      return;
    }
  }
  f();
}

void ResumeToken::set_progress(std::string what) {
  std::lock_guard<std::mutex> lock(mu_);
  progress_ = std::move(what);
}

std::string ResumeToken::progress() const {
  std::lock_guard<std::mutex> lock(mu_);
  return progress_;
}

grpc::Status ResumeToken::take_status() {
  std::lock_guard<std::mutex> lock(mu_);
  host_ = nullptr;
  return std::move(status_);
}

bool ResumeToken::abandon() {
  std::function<void()> callback;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (resumed_) return false;
    host_ = nullptr;
    cancelled_ = true;
    callback = std::move(on_cancel_);
  }
  if (callback) callback();
  return true;
}

void ResumeToken::detach() {
  std::lock_guard<std::mutex> lock(mu_);
  host_ = nullptr;
}

bool ResumeToken::detach_or_rearm(CallHost* host, bool unshared) {
  std::function<void()> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  if (!unshared || resumed_) {
    host_ = nullptr;
    return false;
  }
  host_ = host;
  cancelled_ = false;
  status_ = grpc::Status::OK;
  dropped.swap(on_cancel_);
  progress_.clear();
  return true;
}

RpcSet rpc_set(std::initializer_list<Rpc> rpcs) {
  RpcSet set;
  for (Rpc rpc : rpcs) set.set(static_cast<size_t>(rpc));
  return set;
}

}  // namespace owrap
