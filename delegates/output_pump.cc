#include "delegates/output_pump.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>

namespace owrap {

namespace {
// A line without an end is delivered anyway once it is this long.
constexpr size_t kMaxLine = 65536;
// What one stream may deliver per poll round: a writer that floods the pipe
// (a helper that escaped the process group) must not keep the pump from
// seeing its stop request.
constexpr size_t kRoundBudget = 64 << 10;
// What stop() still reads at most (a pipe enlarged with F_SETPIPE_SZ).
constexpr size_t kFinalDrain = 1 << 20;

// The bytes in the pipe now: all a child that has exited left there. Bytes a
// flooding writer adds while they are read are not chased; chasing them
// cost the restart that stops the pump up to 1 MiB of lines (64K lines of
// a `yes`, ~65 ms idle and up to ~190 ms on a loaded 2-core box).
size_t readable_now(int fd) {
  int n = 0;
  if (::ioctl(fd, FIONREAD, &n) != 0 || n < 0) return kFinalDrain;
  return std::min(static_cast<size_t>(n), kFinalDrain);
}
}  // namespace

OutputPump::OutputPump(int out_fd, int err_fd, LineSink sink)
    : streams_{{out_fd, OutputStream::kStdout, {}}, {err_fd, OutputStream::kStderr, {}}},
      sink_(std::move(sink)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  thread_ = std::thread([this] { run(); });
}

void OutputPump::stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  if (wake_) (void)!::write(wake_.get(), &one, sizeof one);
  thread_.join();
}

void OutputPump::run() {
  while (streams_[0].open || streams_[1].open) {
    pollfd fds[3];
    for (int i = 0; i < 2; i++) fds[i] = {streams_[i].open ? streams_[i].fd : -1, POLLIN, 0};
    fds[2] = {wake_.get(), POLLIN, 0};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[2].revents != 0) break;
    for (int i = 0; i < 2; i++) {
      if (streams_[i].open && fds[i].revents != 0) streams_[i].open = drain(streams_[i], kRoundBudget);
    }
  }
  for (auto& s : streams_) {
    if (s.open) drain(s, readable_now(s.fd));
    emit(s, s.partial);
    s.partial.clear();
  }
}

bool OutputPump::drain(Stream& s, size_t budget) {
  char buf[4096];
  for (size_t total = 0; total < budget;) {
    ssize_t n = ::read(s.fd, buf, std::min(sizeof buf, budget - total));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) return false;
    total += static_cast<size_t>(n);
    s.partial.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = s.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      emit(s, std::string_view(s.partial).substr(start, nl - start));
    }
    s.partial.erase(0, start);
    if (s.partial.size() > kMaxLine) {
      emit(s, s.partial);
      s.partial.clear();
    }
  }
  return true;
}

void OutputPump::emit(Stream& s, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!line.empty()) sink_(s.which, line);
}

}  // namespace owrap
