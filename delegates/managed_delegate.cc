#include "delegates/managed_delegate.h"

#include "common/log.h"

#include <poll.h>
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
}  // namespace

ManagedDelegate::ManagedDelegate(DelegateOptions options) : options_(std::move(options)) {}

ManagedDelegate::~ManagedDelegate() {
  stop(options_.stop_grace);
  if (!runtime_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(runtime_dir_, ec);
  }
}

std::string ManagedDelegate::unavailable_reason() const {
  std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mu_));
  return reason_;
}

void ManagedDelegate::set_state(std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  reason_ = std::move(reason);
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
  std::string parent = options_.runtime_parent.empty() ? "/tmp" : options_.runtime_parent;
  if (auto ok = ensure_private_dir(parent); !ok) return Error{"delegate runtime directory: " + ok.error()};
  std::string tmpl = parent + "/." + options_.wrapper_name + "-delegate-XXXXXX";
  // Chained wrappers nest runtime directories; Unix socket paths end at 107
  // bytes, so a deep chain falls back to a private directory in /tmp.
  if (tmpl.size() + options_.name.size() + 6 >= 108) {
    log_info("delegate runtime directory would be too deep; using /tmp",
             {{"delegate", options_.name}, {"runtime_dir", parent}});
    tmpl = "/tmp/." + options_.wrapper_name + "-delegate-XXXXXX";
  }
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Error{"cannot create delegate runtime directory " + tmpl + ": " + std::strerror(errno)};
  }
  runtime_dir_ = tmpl;
  socket_path_ = runtime_dir_ + "/" + options_.name + ".sock";
  if (socket_path_.size() >= 108) {
    return Error{"delegate socket path " + socket_path_ + " is too long for a Unix socket; set delegate.runtime_dir"};
  }
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
  std::shared_ptr<ChildProcess> child;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !supervisor_.joinable()) return;
    stopping_ = true;
    child = child_;
    cv_.notify_all();
  }
  if (child) {
    child->signal(SIGTERM);
    auto until = std::chrono::steady_clock::now() + grace;
    while (!child->exited() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!child->exited()) {
      log_warn("delegate did not stop within its grace; killing it",
               {{"delegate", options_.name}, {"pid", child->pid()}, {"grace_ms", grace.count()}});
      child->signal(SIGKILL);
    }
  }
  if (supervisor_.joinable()) supervisor_.join();
}

void ManagedDelegate::sleep_backoff(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stopping_; });
}

void ManagedDelegate::supervise() {
  auto backoff = options_.restart_backoff_initial;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
    }
    auto started = std::chrono::steady_clock::now();
    bool was_ready = run_once();
    bool first;
    {
      std::lock_guard<std::mutex> lock(mu_);
      first = !first_attempt_done_;
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
  std::shared_ptr<ChildProcess> child = std::move(spawned.value());
  {
    std::lock_guard<std::mutex> lock(mu_);
    child_ = child;
    reason_ = "starting (pid " + std::to_string(child->pid()) + ")";
  }
  pid_ = child->pid();
  log_info("delegate started", {{"delegate", options_.name}, {"pid", child->pid()}, {"socket", socket_path_}});
  std::thread pump([this, child] { pump_output(*child); });

  auto stopping = [this, &child] {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_ || child->exited();
  };
  std::string caps;
  bool ready = wait_until_answers(channel_, options_.ready_timeout, stopping, &caps);
  if (ready) {
    ready_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reason_ = "ready";
      first_attempt_done_ = true;  // start() may return now
      first_attempt_ok_ = true;
      cv_.notify_all();
    }
    log_info("delegate ready", {{"delegate", options_.name}, {"pid", child->pid()}, {"driver", caps}});
  } else if (!child->exited()) {
    log_error("delegate did not answer within ready_timeout_ms; stopping it",
              {{"delegate", options_.name}, {"ready_timeout_ms", options_.ready_timeout.count()}});
    child->signal(SIGTERM);
    auto until = std::chrono::steady_clock::now() + options_.stop_grace;
    while (!child->exited() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    child->signal(SIGKILL);
  }
  child->wait_exited();
  ready_ = false;
  ExitInfo exit = child->reap();
  pid_ = 0;
  bool expected = false;  // we asked it to stop
  {
    std::lock_guard<std::mutex> lock(mu_);
    child_.reset();
    expected = stopping_;
    reason_ = stopping_ ? "stopped" : "restarting after it " + exit.describe();
    if (!ready) reason_ = "it " + exit.describe() + " before answering";
  }
  (expected ? log_info : log_warn)("delegate exited", {{"delegate", options_.name},
                                                       {"pid", child->pid()},
                                                       {"exit_code", exit.code},
                                                       {"signal", exit.signal},
                                                       {"how", exit.describe()}});
  pump.join();
  return ready;
}

// Forwards the child's output line by line into our log, prefixed with the
// delegate's name. Ends when both pipes are closed.
void ManagedDelegate::pump_output(ChildProcess& child) {
  struct Stream {
    int fd;
    const char* name;
    std::string partial;
    bool open = true;
  } streams[2] = {{child.stdout_fd(), "stdout", {}}, {child.stderr_fd(), "stderr", {}}};
  auto emit = [this](const char* stream, const std::string& line) {
    if (!line.empty()) log_info("[" + options_.name + "] " + line, {{"delegate", options_.name}, {"stream", stream}});
  };
  while (streams[0].open || streams[1].open) {
    pollfd fds[2];
    for (int i = 0; i < 2; i++) fds[i] = {streams[i].open ? streams[i].fd : -1, POLLIN, 0};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; i++) {
      if (!streams[i].open || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(streams[i].fd, buf, sizeof buf);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        emit(streams[i].name, streams[i].partial);
        streams[i].open = false;
        continue;
      }
      streams[i].partial.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = streams[i].partial.find('\n')) != std::string::npos;) {
        emit(streams[i].name, streams[i].partial.substr(0, nl));
        streams[i].partial.erase(0, nl + 1);
      }
      if (streams[i].partial.size() > 65536) {  // a line without end: flush it anyway
        emit(streams[i].name, streams[i].partial);
        streams[i].partial.clear();
      }
    }
  }
}

}  // namespace owrap
