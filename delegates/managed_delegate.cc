#include "delegates/managed_delegate.h"

#include "common/log.h"
#include "compute_driver.grpc.pb.h"
#include "delegates/delegate_log.h"
#include "delegates/output_pump.h"

#include <sys/eventfd.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

extern char** environ;

namespace owrap {

namespace {
// The drivers read this variable as their own bind path: leaking ours would
// make the delegate try to bind the wrapper's socket.
constexpr const char* kSocketEnv = "OPENSHELL_COMPUTE_DRIVER_SOCKET";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

std::string ms(std::chrono::milliseconds d) {
  return std::to_string(d.count()) + " ms";
}
}  // namespace

ManagedDelegate::ManagedDelegate(DelegateOptions options)
    : options_(std::move(options)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), stop_grace_(options_.stop_grace) {}

ManagedDelegate::~ManagedDelegate() {
  stop(options_.stop_grace);
}

std::string ManagedDelegate::unavailable_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

void ManagedDelegate::set_state(std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  reason_ = std::move(reason);
}

bool ManagedDelegate::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

std::vector<std::string> ManagedDelegate::expand(const std::vector<std::string>& argv) const {
  std::vector<std::string> out;
  for (const auto& a : argv) {
    out.push_back(replace_all(replace_all(a, "{socket}", socket_path_), "{pid}", std::to_string(::getpid())));
  }
  return out;
}

std::map<std::string, std::string> ManagedDelegate::child_env() const {
  std::map<std::string, std::string> env;
  if (options_.inherit_env) {
    for (char** e = environ; e && *e; e++) {
      std::string kv = *e;
      auto eq = kv.find('=');
      if (eq == std::string::npos) continue;
      env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    env.erase(kSocketEnv);
  }
  for (const auto& [k, v] : options_.env) {
    env[k] = replace_all(replace_all(v, "{socket}", socket_path_), "{pid}", std::to_string(::getpid()));
  }
  return env;
}

Result<bool> ManagedDelegate::start(const std::function<bool()>& cancelled) {
  if (!wake_) return Error{std::string("eventfd: ") + std::strerror(errno)};
  auto dir = RuntimeDir::create(options_.runtime_parent, options_.wrapper_name, options_.name + ".sock");
  if (!dir) return Error{dir.error()};
  runtime_dir_ = std::move(dir.value());
  socket_path_ = runtime_dir_->path() + "/" + options_.name + ".sock";
  channel_ = make_delegate_channel("unix:" + socket_path_);
  supervisor_ = std::thread([this] { supervise(); });
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return first_attempt_done_; })) {
    if (cancelled && cancelled()) return Error{"start-up interrupted"};
  }
  if (!first_attempt_ok_) return Error{"delegate \"" + options_.name + "\" did not become ready: " + reason_};
  return true;
}

void ManagedDelegate::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_grace_ = grace;
      if (probe_ctx_ != nullptr) probe_ctx_->TryCancel();
    }
    cv_.notify_all();
  }
  uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
  // The supervisor stops the child: it is the thread the child's
  // PR_SET_PDEATHSIG is tied to.
  std::lock_guard<std::mutex> join(join_mu_);
  if (supervisor_.joinable()) supervisor_.join();
}

void ManagedDelegate::sleep_backoff(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stopping_; });
}

void ManagedDelegate::supervise() {
  auto backoff = options_.restart_backoff_initial;
  while (!stopping()) {
    auto started = std::chrono::steady_clock::now();
    bool was_ready = run_once();
    {
      std::lock_guard<std::mutex> lock(mu_);
      bool first = !first_attempt_done_;
      if (first) {
        first_attempt_done_ = true;
        first_attempt_ok_ = was_ready;
        cv_.notify_all();
      }
      if (stopping_ || (first && !was_ready)) break;
    }
    // A child that ran well for a while starts over from the short backoff.
    if (was_ready && std::chrono::steady_clock::now() - started > std::chrono::seconds(10)) {
      backoff = options_.restart_backoff_initial;
    }
    log_warn("restarting delegate", {{"delegate", options_.name}, {"backoff_ms", backoff.count()}});
    sleep_backoff(backoff);
    backoff = std::min(backoff * 2, options_.restart_backoff_max);
  }
}

bool ManagedDelegate::run_once() {
  std::error_code ec;
  std::filesystem::remove(socket_path_, ec);  // a stale socket of our previous child
  auto spawned = ChildProcess::spawn(expand(options_.command), child_env());
  if (!spawned) {
    set_state("cannot start: " + spawned.error());
    log_error("cannot start delegate", {{"delegate", options_.name}, {"error", spawned.error()}});
    return false;
  }
  std::unique_ptr<ChildProcess> child = std::move(spawned.value());
  set_state("starting (pid " + std::to_string(child->pid()) + ")");
  pid_ = child->pid();
  log_info("delegate started", {{"delegate", options_.name}, {"pid", child->pid()}, {"socket", socket_path_}});
  OutputPump pump(child->stdout_fd(), child->stderr_fd(), [this](OutputStream stream, std::string_view line) {
    log_delegate_line(options_.name, stream, line);
  });

  std::string caps;
  Ending ending = await_ready(*child, &caps);
  const bool was_ready = !caps.empty();
  ready_ = false;
  std::chrono::milliseconds grace;
  {
    std::lock_guard<std::mutex> lock(mu_);
    grace = stop_grace_;
  }
  bool grace_ran_out = false;
  switch (ending) {
    case Ending::kStopping:
      grace_ran_out = !terminate(*child, grace);
      break;
    case Ending::kReadyTimeout:
      log_error(
          "delegate did not answer within ready_timeout_ms; stopping it",
          {{"delegate", options_.name}, {"pid", child->pid()}, {"ready_timeout_ms", options_.ready_timeout.count()}});
      grace_ran_out = !terminate(*child, options_.stop_grace);
      break;
    case Ending::kUnresponsive:
      log_error("delegate stopped answering; killing it", {{"delegate", options_.name},
                                                           {"pid", child->pid()},
                                                           {"liveness_failures", options_.liveness_failures},
                                                           {"liveness_timeout_ms", options_.liveness_timeout.count()}});
      break;
    case Ending::kExited:
      break;
  }
  // Whatever it started dies with it, while the leader is still unreaped
  // (its pid, and so the group id, cannot be reused yet).
  child->signal(SIGKILL);
  child->wait_exited();
  ExitInfo exit = child->reap();
  pid_ = 0;
  // What it printed up to now; a helper that escaped its group must not keep
  // the restart waiting for the pipes to close.
  pump.stop();
  if (grace_ran_out) {
    // Said after the fact: it may have finished exiting on its own just as
    // the grace ran out.
    bool killed = exit.signal == SIGKILL;
    log_warn(killed ? "delegate did not stop within its grace; killed it"
                    : "delegate did not stop within its grace, then ended before SIGKILL took effect",
             {{"delegate", options_.name},
              {"pid", child->pid()},
              {"grace_ms", (ending == Ending::kStopping ? grace : options_.stop_grace).count()},
              {"how", exit.describe()}});
  }
  // We stopped it (shutdown, ready timeout, hang): already logged why.
  bool expected = ending != Ending::kExited;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_)
      reason_ = "stopped";
    else if (ending == Ending::kReadyTimeout)
      reason_ = "it did not answer within ready_timeout_ms (" + ms(options_.ready_timeout) + ")";
    else if (ending == Ending::kUnresponsive)
      reason_ =
          "restarting: it did not answer " + std::to_string(options_.liveness_failures) + " liveness probes in a row";
    else if (was_ready)
      reason_ = "restarting after it " + exit.describe();
    else
      reason_ = "it " + exit.describe() + " before answering";
  }
  (expected ? log_info : log_warn)("delegate exited", {{"delegate", options_.name},
                                                       {"pid", child->pid()},
                                                       {"exit_code", exit.code},
                                                       {"signal", exit.signal},
                                                       {"how", exit.describe()}});
  return was_ready;
}

ManagedDelegate::Ending ManagedDelegate::await_ready(ChildProcess& child, std::string* capabilities) {
  auto give_up = [this, &child] { return stopping() || child.exited(); };
  if (!wait_until_answers(channel_, options_.ready_timeout, give_up, capabilities)) {
    if (stopping()) return Ending::kStopping;
    return child.exited() ? Ending::kExited : Ending::kReadyTimeout;
  }
  if (capabilities->empty()) *capabilities = "?";
  ready_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reason_ = "ready";
    first_attempt_done_ = true;  // start() may return now
    first_attempt_ok_ = true;
    cv_.notify_all();
  }
  log_info("delegate ready", {{"delegate", options_.name}, {"pid", child.pid()}, {"driver", *capabilities}});
  return watch(child);
}

ManagedDelegate::Ending ManagedDelegate::watch(ChildProcess& child) {
  using clock = std::chrono::steady_clock;
  const bool probing = options_.liveness_failures > 0;
  int failures = 0;
  auto next_probe = clock::now() + options_.liveness_interval;
  while (true) {
    auto wait = probing ? std::chrono::duration_cast<std::chrono::milliseconds>(next_probe - clock::now())
                        : std::chrono::milliseconds(-1);
    if (probing && wait.count() < 0) wait = std::chrono::milliseconds(0);
    if (child.wait_exited_for(wait, wake_.get())) return Ending::kExited;
    if (stopping()) return Ending::kStopping;
    if (!probing || clock::now() < next_probe) continue;
    next_probe = clock::now() + options_.liveness_interval;
    grpc::Status s = probe();
    if (stopping()) return Ending::kStopping;
    if (child.exited()) return Ending::kExited;
    // Any answer from the driver itself (even an error) proves it serves;
    // UNAVAILABLE on a connected channel is its own (a chained wrapper whose
    // delegate is restarting), not a hang.
    bool answered =
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
        (s.error_code() != grpc::StatusCode::UNAVAILABLE || channel_->GetState(false) == GRPC_CHANNEL_READY);
    if (answered) {
      if (failures > 0) log_info("delegate answers again", {{"delegate", options_.name}, {"pid", child.pid()}});
      failures = 0;
      continue;
    }
    failures++;
    log_warn("delegate liveness probe failed", {{"delegate", options_.name},
                                                {"pid", child.pid()},
                                                {"failures", failures},
                                                {"liveness_failures", options_.liveness_failures},
                                                {"status", s.error_code()},
                                                {"error", s.error_message()}});
    if (failures >= options_.liveness_failures) return Ending::kUnresponsive;
  }
}

grpc::Status ManagedDelegate::probe() {
  auto stub = openshell::compute::v1::ComputeDriver::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.liveness_timeout);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return grpc::Status::CANCELLED;
    probe_ctx_ = &ctx;
  }
  openshell::compute::v1::GetCapabilitiesRequest req;
  openshell::compute::v1::GetCapabilitiesResponse resp;
  grpc::Status s = stub->GetCapabilities(&ctx, req, &resp);
  std::lock_guard<std::mutex> lock(mu_);
  probe_ctx_ = nullptr;
  return s;
}

bool ManagedDelegate::terminate(ChildProcess& child, std::chrono::milliseconds grace) {
  child.signal(SIGTERM);
  // The caller sends SIGKILL to the group in any case.
  return child.wait_exited_for(grace);
}

}  // namespace owrap
