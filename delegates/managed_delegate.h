#pragma once

#include "delegates/child_process.h"
#include "delegates/delegate.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace owrap {

// A base driver process the wrapper launches on a socket in a private
// runtime directory, waits for, restarts with exponential backoff when it
// exits, and stops (SIGTERM, then SIGKILL after the grace) on shutdown. The
// supervisor thread forks, so the child's PR_SET_PDEATHSIG is tied to a
// thread that lives exactly as long as the supervision.
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

  const std::string& socket_path() const { return socket_path_; }
  pid_t pid() const { return pid_.load(); }

 private:
  void supervise();
  bool run_once();  // returns whether the child became ready
  void pump_output(ChildProcess& child);
  std::vector<std::string> expand(const std::vector<std::string>& argv) const;
  std::map<std::string, std::string> child_env() const;
  void set_state(std::string reason);
  void sleep_backoff(std::chrono::milliseconds d);

  DelegateOptions options_;
  std::string runtime_dir_;
  std::string socket_path_;
  std::shared_ptr<grpc::Channel> channel_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool first_attempt_done_ = false;
  bool first_attempt_ok_ = false;
  std::string reason_ = "not started";
  std::shared_ptr<ChildProcess> child_;  // mu_
  std::atomic<bool> ready_{false};
  std::atomic<pid_t> pid_{0};
  std::thread supervisor_;
};

}  // namespace owrap
