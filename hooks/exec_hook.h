// The `exec` transport (docs/hooks.md, "exec hooks"): one process per
// invocation, the OCI-hook / CNI-plugin model. The HookRequest goes to its
// stdin as protobuf JSON (proto field names), its stdout is one HookResponse
// the same way; its stderr goes to the wrapper's log under the hook's name.
// The environment is scrubbed; a deadline, a cancelled caller or stop()
// kills its whole process group.
//
// All I/O runs on the given io_context (the wrapper's one io thread):
// spawning, the pipes and reaping (a pidfd per child, so no thread waits for
// a process and no pid but our own child's is ever waited on).
#pragma once

#include "hooks/hook.h"
#include "hooks/hook_spec.h"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace owrap {

struct ExecHookConfig;
class ExecScheduler;

class ExecHook final : public Hook {
 public:
  // `spec` is a checked kExec entry (command[0] absolute). `io` must
  // outlive the hook, and be run by one thread.
  ExecHook(const HookSpec& spec, boost::asio::io_context& io);
  ~ExecHook() override;  // stop()

  std::string transport() const override { return "exec"; }
  // Any thread. `done` runs on the io thread, except after stop(), when
  // it runs at once with CANCELLED.
  void invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options, HookDone done) override;
  // Kills every process of this hook and ends every queued and running
  // invocation with CANCELLED; returns once no `done` can run any more.
  // Call it from the io thread, from another thread while the io thread
  // runs, or once no thread runs the io_context.
  void stop() override;

  // The environment a process gets: PATH, HOME and LANG when the wrapper has
  // them, the configured `env`, and TRACEPARENT when the call has one.
  static std::map<std::string, std::string> scrubbed_env(const std::map<std::string, std::string>& configured);

 private:
  void run_on_io_and_wait(const std::function<void()>& f);

  boost::asio::io_context& io_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<const ExecHookConfig> config_;
  std::shared_ptr<ExecScheduler> scheduler_;
  std::mutex mu_;  // orders invoke()'s posts before stop()'s
  bool stopped_ = false;
  std::mutex stop_mu_;  // a second stop() waits for the first
};

}  // namespace owrap
