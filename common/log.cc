#include "common/log.h"

#include <absl/synchronization/mutex.h>
#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>

namespace owrap {

std::optional<LogLevel> parse_log_level(std::string_view name) {
  if (name == "debug" || name == "trace") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return std::nullopt;
}

std::string_view log_level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

namespace {

std::string rfc3339_now() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06ldZ", static_cast<long>(micros));
  return buf;
}

// A forked child has no writer thread (and maybe a lock held by a thread
// that is gone): it writes synchronously.
std::atomic<bool> in_forked_child{false};

// Writes all of `data`; false when the fd refuses it (closed, error, or not
// writable within `poll_ms` when it is non-blocking).
bool write_all(int fd, std::string_view data, int poll_ms) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, poll_ms) <= 0) return false;
  }
  return true;
}

}  // namespace

std::string format_log_line(LogLevel level, std::string_view message, nlohmann::json fields) {
  nlohmann::json line = nlohmann::json::object();
  line["time"] = rfc3339_now();
  line["level"] = log_level_name(level);
  line["message"] = message;
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) line[k] = std::move(v);
  }
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  return text;
}

struct LogSink::State : std::enable_shared_from_this<LogSink::State> {
  enum class Mode { kIdle, kRunning, kStopped };

  explicit State(Options o) : options(o) {}
  const Options options;

  std::mutex mu;
  std::condition_variable wake;      // the writer waits for lines or stop
  std::condition_variable progress;  // flush() and stop() wait for the writer
  Mode mode = Mode::kIdle;
  std::deque<std::string> queue;
  size_t queued_bytes = 0;
  uint64_t accepted = 0, written = 0;  // lines through the queue
  uint64_t dropped = 0, reported = 0;
  std::chrono::steady_clock::time_point last_report;
  bool stopping = false, writer_waiting = false, writer_exited = false;

  // Whole lines, never interleaved: the writer's batches and synchronous
  // lines take turns. Timed, so a writer stuck on the fd cannot hang exit.
  std::timed_mutex fd_mu;

  bool report_due(std::chrono::steady_clock::time_point now) const {
    return dropped > reported && now - last_report >= options.report_every;
  }
  std::string drop_report() {
    uint64_t count = dropped - reported;
    reported = dropped;
    last_report = std::chrono::steady_clock::now();
    return format_log_line(LogLevel::kWarn, "log lines dropped",
                           {{"dropped", count}, {"total_dropped", dropped}, {"buffer_lines", options.max_lines}});
  }
  void write_sync(std::string_view line) {
    std::unique_lock<std::timed_mutex> fd_lock(fd_mu, std::chrono::seconds(1));
    if (fd_lock.owns_lock() && write_all(options.fd, line, 1000)) return;
    std::lock_guard<std::mutex> lock(mu);
    dropped++;
  }

  static void run(std::shared_ptr<State> self);
  void start_writer();
};

void LogSink::State::start_writer() {
  static std::once_flag atfork;
  std::call_once(atfork, [] { ::pthread_atfork(nullptr, nullptr, [] { in_forked_child = true; }); });
  // Created with every signal blocked, whoever logs first: a process-directed
  // signal must reach the thread that waits for it (SignalWatcher), and a
  // SIGPIPE on stderr becomes EPIPE here instead of killing the process.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  last_report = std::chrono::steady_clock::now();
  // Detached: it holds the state, so a writer stuck on the fd can be
  // abandoned at stop() without anyone waiting for it.
  std::thread(run, shared_from_this()).detach();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  mode = Mode::kRunning;
}

namespace {
constexpr size_t kGatherLines = 256;
constexpr std::chrono::milliseconds kGatherWindow{2};
}  // namespace

void LogSink::State::run(std::shared_ptr<State> self) {
  State& s = *self;
  std::unique_lock<std::mutex> lock(s.mu);
  while (true) {
    while (s.queue.empty() && !s.stopping && !s.report_due(std::chrono::steady_clock::now())) {
      s.writer_waiting = true;
      if (s.dropped > s.reported) {
        s.wake.wait_until(lock, s.last_report + s.options.report_every);
      } else {
        s.wake.wait(lock);
      }
      s.writer_waiting = false;
    }
    if (s.stopping && s.queue.empty()) break;
    // Lines come one per call: gathering them for a moment costs the writer
    // one timer wake per batch instead of every caller a futex wake (and
    // the thread switch behind it) per line.
    if (!s.stopping && s.queue.size() < kGatherLines) {
      s.wake.wait_for(lock, kGatherWindow, [&s] { return s.stopping || s.queue.size() >= kGatherLines; });
    }
    std::string batch;
    batch.reserve(s.queued_bytes);
    for (const std::string& line : s.queue) batch += line;
    size_t lines = s.queue.size();
    s.queue.clear();
    s.queued_bytes = 0;
    if (s.report_due(std::chrono::steady_clock::now())) batch += s.drop_report();
    lock.unlock();
    {
      std::lock_guard<std::timed_mutex> fd_lock(s.fd_mu);
      write_all(s.options.fd, batch, -1);
    }
    lock.lock();
    s.written += lines;
    s.progress.notify_all();
  }
  // From here on callers write synchronously; the last report follows every
  // line the writer had.
  s.mode = Mode::kStopped;
  std::string last = s.dropped > s.reported ? s.drop_report() : std::string();
  lock.unlock();
  if (!last.empty()) s.write_sync(last);
  lock.lock();
  s.writer_exited = true;
  s.progress.notify_all();
}

LogSink::LogSink(Options options) : state_(std::make_shared<State>(options)) {}

LogSink::~LogSink() {
  stop();
}

void LogSink::write(std::string line) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (s.mode == State::Mode::kIdle && !in_forked_child) s.start_writer();
  if (s.mode == State::Mode::kStopped || in_forked_child) {
    lock.unlock();
    return s.write_sync(line);
  }
  if (s.queue.size() >= s.options.max_lines || s.queued_bytes + line.size() > s.options.max_bytes) {
    s.dropped++;
    return;
  }
  s.queued_bytes += line.size();
  s.queue.push_back(std::move(line));
  s.accepted++;
  bool wake = s.writer_waiting;
  lock.unlock();
  if (wake) s.wake.notify_one();
}

bool LogSink::flush(std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  uint64_t target = s.accepted;
  s.progress.wait_for(lock, timeout, [&] { return s.written >= target || s.writer_exited; });
  return s.written >= target;
}

void LogSink::stop(std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  // No writer to wait for: it never started (a second stop() of a sink that
  // never logged, as the atexit handler after LogShutdownGuard), it exited,
  // or an earlier stop() abandoned it.
  if (s.mode != State::Mode::kRunning || in_forked_child || s.writer_exited) {
    s.mode = State::Mode::kStopped;
    return;
  }
  s.stopping = true;
  s.wake.notify_one();
  if (!s.progress.wait_for(lock, timeout, [&] { return s.writer_exited; })) {
    // Stuck on the fd: its queued lines are lost, later ones go synchronously.
    s.mode = State::Mode::kStopped;
  }
}

uint64_t LogSink::dropped() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->dropped;
}

Logger& Logger::instance() {
  // Never destroyed: usable from atexit paths and late threads. The atexit
  // flush covers every way out of main() that runs handlers.
  static Logger* logger = [] {
    auto* l = new Logger(LogSink::Options{});
    std::atexit([] { Logger::instance().shutdown(); });
    return l;
  }();
  return *logger;
}

void Logger::write(LogLevel level, std::string_view message, nlohmann::json fields) {
  sink_.write(format_log_line(level, message, std::move(fields)));
}

namespace {

void grpc_log(gpr_log_func_args* args) {
  LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                   : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                             : LogLevel::kDebug;
  if (!Logger::instance().enabled(level)) return;
  Logger::instance().write(level, std::string("grpc: ") + (args->message ? args->message : ""),
                           {{"library", "grpc"}, {"file", args->file ? args->file : ""}, {"line", args->line}});
}

void protobuf_log(google::protobuf::LogLevel severity, const char* file, int line, const std::string& message) {
  LogLevel level = severity >= google::protobuf::LOGLEVEL_ERROR     ? LogLevel::kError
                   : severity == google::protobuf::LOGLEVEL_WARNING ? LogLevel::kWarn
                                                                    : LogLevel::kInfo;
  if (!Logger::instance().enabled(level)) return;
  Logger::instance().write(level, "protobuf: " + message,
                           {{"library", "protobuf"}, {"file", file ? file : ""}, {"line", line}});
}

}  // namespace

void skip_mutex_deadlock_detection() {
  // Debian's Abseil checks every gRPC mutex acquisition for lock-order
  // cycles (GraphCycles showed in every relayed call's profile); that is a
  // debugging aid, not something a production proxy should pay for.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

void route_library_logs() {
  gpr_set_log_function(grpc_log);
  google::protobuf::SetLogHandler(protobuf_log);
}

}  // namespace owrap
