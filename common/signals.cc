#include "common/signals.h"

#include "common/log.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstring>

namespace owrap {

namespace {
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, sig);
  return set;
}
}  // namespace

SignalWatcher::SignalWatcher(std::string who) : who_(std::move(who)) {
  sigset_t set = handled_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  signal_fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC));
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  thread_ = std::thread([this] { run(); });
}

SignalWatcher::~SignalWatcher() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  thread_.join();
}

int SignalWatcher::wait_for_termination(std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto done = [this] { return termination_.load() != 0; };
  if (timeout)
    terminated_.wait_for(lock, *timeout, done);
  else
    terminated_.wait(lock, done);
  return termination_.load();
}

void SignalWatcher::run() {
  while (true) {
    pollfd fds[2] = {{signal_fd_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log_error("signal watcher: poll failed", {{"error", std::strerror(errno)}});
      return;
    }
    if (fds[1].revents != 0) return;
    signalfd_siginfo info{};
    if (::read(signal_fd_.get(), &info, sizeof info) != static_cast<ssize_t>(sizeof info)) continue;
    int sig = static_cast<int>(info.ssi_signo);
    nlohmann::json fields = {{"signal", strsignal(sig)}, {"sender_pid", info.ssi_pid}};
    if (sig == SIGTERM || sig == SIGINT) {
      if (termination_.load() != 0) {
        log_info("termination signal received again; already stopping", fields);
        continue;
      }
      log_info(who_ + ": termination signal received", fields);
      std::lock_guard<std::mutex> lock(mu_);
      termination_ = sig;
      terminated_.notify_all();
    } else if (sig == SIGHUP) {
      log_warn("SIGHUP received and ignored: configuration reload is not supported yet; restart to apply changes",
               fields);
    } else {
      log_warn("signal received and ignored", fields);
    }
  }
}

}  // namespace owrap
