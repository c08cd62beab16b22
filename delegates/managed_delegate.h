#pragma once

#include "delegates/child_process.h"
#include "delegates/delegate.h"
#include "delegates/runtime_dir.h"

#include <grpcpp/client_context.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace owrap {

// A base driver process the wrapper launches on a socket in a private
// runtime directory, waits for, probes for liveness, restarts with
// exponential backoff when it exits or hangs, and stops (SIGTERM, then
// SIGKILL after the grace) on shutdown. Its whole process group goes with
// it: helpers it started never outlive it. The supervisor thread forks, so
// the child's PR_SET_PDEATHSIG is tied to a thread that lives exactly as
// long as the supervision; it is also the only thread that waits on the
// child or probes it (never a completion-queue thread).
class ManagedDelegate final : public Delegate {
 public:
  explicit ManagedDelegate(DelegateOptions options);
  ~ManagedDelegate() override;

  const std::string& name() const override { return options_.name; }
  std::shared_ptr<grpc::Channel> channel() const override { return channel_; }
  bool available() const override { return ready_.load(); }
  std::string unavailable_reason() const override;
  Result<bool> start(const std::function<bool()>& cancelled) override;
  void stop(std::chrono::milliseconds grace) override;

  std::string socket_path() const override { return socket_path_; }
  pid_t pid() const { return pid_.load(); }

 private:
  // Why one run of the child ended.
  enum class Ending { kExited, kStopping, kReadyTimeout, kUnresponsive };

  void supervise();
  bool run_once();  // returns whether the child became ready
  Ending await_ready(ChildProcess& child, std::string* capabilities);
  Ending watch(ChildProcess& child);  // while ready: exit, stop or liveness
  grpc::Status probe();
  // SIGTERM to the group, then waits up to the grace; false if the child
  // was still running then (the caller's SIGKILL ends it).
  bool terminate(ChildProcess& child, std::chrono::milliseconds grace);
  bool stopping();
  std::vector<std::string> expand(const std::vector<std::string>& argv) const;
  std::map<std::string, std::string> child_env() const;
  void set_state(std::string reason);
  void sleep_backoff(std::chrono::milliseconds d);

  DelegateOptions options_;
  std::unique_ptr<RuntimeDir> runtime_dir_;
  std::string socket_path_;
  std::shared_ptr<grpc::Channel> channel_;
  UniqueFd wake_;  // eventfd, readable once stop() was called

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::chrono::milliseconds stop_grace_;
  grpc::ClientContext* probe_ctx_ = nullptr;  // the probe in flight, cancelled by stop()
  bool first_attempt_done_ = false;
  bool first_attempt_ok_ = false;
  std::string reason_ = "not started";
  std::atomic<bool> ready_{false};
  std::atomic<pid_t> pid_{0};
  std::mutex join_mu_;
  std::thread supervisor_;
};

}  // namespace owrap
