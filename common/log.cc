#include "common/log.h"

#include <absl/synchronization/mutex.h>
#include <google/protobuf/stubs/logging.h>
#include <grpc/support/log.h>

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
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

// "2026-11-26T06:00:00.123456Z". The part up to the seconds is kept per
// thread: strftime and gmtime_r cost more than the rest of a line.
void append_rfc3339_now(std::string& out) {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - secs).count();
  thread_local std::chrono::system_clock::time_point cached_secs;
  thread_local char cached[32];
  thread_local size_t cached_size = 0;
  if (cached_size == 0 || secs != cached_secs) {
    std::time_t t = std::chrono::system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    cached_size = std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_secs = secs;
  }
  out.append(cached, cached_size);
  char frac[8] = {'.', '0', '0', '0', '0', '0', '0', 'Z'};
  for (int i = 6; i > 0 && micros > 0; i--, micros /= 10) frac[i] = static_cast<char>('0' + micros % 10);
  out.append(frac, sizeof frac);
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

namespace {

// Bjoern Hoehrmann's UTF-8 decoder, the table nlohmann's serializer uses:
// byte classes, then transitions. State 0 accepts, 1 rejects.
constexpr uint8_t kUtf8Accept = 0, kUtf8Reject = 1;
constexpr uint8_t kUtf8[400] = {
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,  // 00..1F
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,  // 20..3F
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,  // 40..5F
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,  // 60..7F
    1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,
    9,   9,   9,   9,   9,   9,   9,   9,   9,   9,   9,   9,   9,   9,   9,   9,  // 80..9F
    7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,
    7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,   7,  // A0..BF
    8,   8,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,
    2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,   2,    // C0..DF
    0xA, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x3, 0x4, 0x3, 0x3,  // E0..EF
    0xB, 0x6, 0x6, 0x6, 0x5, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8, 0x8,  // F0..FF
    0x0, 0x1, 0x2, 0x3, 0x5, 0x8, 0x7, 0x1, 0x1, 0x1, 0x4, 0x6, 0x1, 0x1, 0x1, 0x1,  // s0..s0
    1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,
    1,   0,   1,   1,   1,   1,   1,   0,   1,   0,   1,   1,   1,   1,   1,   1,  // s1..s2
    1,   2,   1,   1,   1,   1,   1,   2,   1,   2,   1,   1,   1,   1,   1,   1,
    1,   1,   1,   1,   1,   1,   1,   2,   1,   1,   1,   1,   1,   1,   1,   1,  // s3..s4
    1,   2,   1,   1,   1,   1,   1,   1,   1,   2,   1,   1,   1,   1,   1,   1,
    1,   1,   1,   1,   1,   1,   1,   3,   1,   3,   1,   1,   1,   1,   1,   1,  // s5..s6
    1,   3,   1,   1,   1,   1,   1,   3,   1,   3,   1,   1,   1,   1,   1,   1,
    1,   3,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,  // s7..s8
};
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool plain_ascii(unsigned char c) {
  return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

void append_escaped_ascii(std::string& out, unsigned char c) {
  switch (c) {
    case '\b':
      out += "\\b";
      return;
    case '\t':
      out += "\\t";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\r':
      out += "\\r";
      return;
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    default: {
      static constexpr char kHex[] = "0123456789abcdef";
      const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
      out.append(esc, sizeof esc);
    }
  }
}

// One sequence starting at s[i] (a byte >= 0x80); returns the index after
// what it consumed. As nlohmann's replace handler: a valid sequence is
// copied; an invalid one becomes one U+FFFD, and the byte that proved it
// invalid is read again unless it was the sequence's first; a sequence cut
// short by the end of the string becomes one U+FFFD.
size_t append_utf8_sequence(std::string& out, std::string_view s, size_t i) {
  const size_t start = i;
  uint8_t state = kUtf8Accept;
  for (; i < s.size(); i++) {
    state = kUtf8[256 + state * 16 + kUtf8[static_cast<unsigned char>(s[i])]];
    if (state == kUtf8Accept) {
      out.append(s.data() + start, i + 1 - start);
      return i + 1;
    }
    if (state == kUtf8Reject) {
      out += kReplacement;
      return i > start ? i : i + 1;
    }
  }
  out += kReplacement;
  return i;
}

void append_quoted(std::string& out, std::string_view s) {
  out.push_back('"');
  append_json_escaped(out, s);
  out.push_back('"');
}

std::string dump_value(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t run = i;
    while (run < s.size() && plain_ascii(static_cast<unsigned char>(s[run]))) run++;
    out.append(s.data() + i, run - i);
    i = run;
    if (i == s.size()) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      append_escaped_ascii(out, c);
      i++;
    } else {
      i = append_utf8_sequence(out, s, i);
    }
  }
}

LogLine::LogLine(LogLevel level, std::string_view message) {
  text_.reserve(256);
  fields_.reserve(12);
  begin_field("time");
  text_.push_back('"');
  append_rfc3339_now(text_);
  text_.push_back('"');
  end_field();
  add("level", log_level_name(level));
  add("message", message);
}

LogLine::LogLine(LogLevel level, std::string_view message, std::string_view time) {
  add("time", time);
  add("level", log_level_name(level));
  add("message", message);
}

void LogLine::begin_field(std::string_view key) {
  Field f{};
  f.key = static_cast<uint32_t>(text_.size());
  f.key_size = static_cast<uint32_t>(key.size());
  text_.append(key);
  f.value = static_cast<uint32_t>(text_.size());
  fields_.push_back(f);
}

void LogLine::end_field() {
  fields_.back().value_size = static_cast<uint32_t>(text_.size()) - fields_.back().value;
  // Kept in key order as fields come (a handful: insertion is cheapest);
  // after the fields of the same key, so the last of them is the one written.
  for (size_t i = fields_.size() - 1; i > 0 && key_of(fields_[i]) < key_of(fields_[i - 1]); i--) {
    std::swap(fields_[i], fields_[i - 1]);
  }
}

LogLine& LogLine::add(std::string_view key, std::string_view value) {
  begin_field(key);
  append_quoted(text_, value);
  end_field();
  return *this;
}

LogLine& LogLine::add(std::string_view key, bool value) {
  begin_field(key);
  text_ += value ? "true" : "false";
  end_field();
  return *this;
}

LogLine& LogLine::add(std::string_view key, double value) {
  // Rare, and nlohmann's float format is its own: ask it.
  return add_json(key, nlohmann::json(value));
}

LogLine& LogLine::add_signed(std::string_view key, int64_t value) {
  begin_field(key);
  char buf[24];
  text_.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
  end_field();
  return *this;
}

LogLine& LogLine::add_unsigned(std::string_view key, uint64_t value) {
  begin_field(key);
  char buf[24];
  text_.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
  end_field();
  return *this;
}

LogLine& LogLine::add_json(std::string_view key, const nlohmann::json& value) {
  if (value.is_string()) return add(key, std::string_view(value.get_ref<const std::string&>()));
  begin_field(key);
  text_ += dump_value(value);
  end_field();
  return *this;
}

std::string LogLine::finish() {
  std::string out;
  out.reserve(text_.size() + 4 * fields_.size() + 16);
  out.push_back('{');
  for (size_t i = 0; i < fields_.size(); i++) {
    const Field& f = fields_[i];
    if (i + 1 < fields_.size() && key_of(fields_[i + 1]) == key_of(f)) continue;
    if (out.size() > 1) out.push_back(',');
    append_quoted(out, key_of(f));
    out.push_back(':');
    out.append(text_, f.value, f.value_size);
  }
  out += "}\n";
  return out;
}

std::string format_log_line(LogLevel level, std::string_view message, nlohmann::json fields) {
  LogLine line(level, message);
  if (fields.is_object()) {
    for (const auto& [k, v] : fields.items()) line.add_json(k, v);
  }
  return line.finish();
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
  uint64_t flush_wanted = 0;           // flush() waits for this many written
  uint64_t dropped = 0, reported = 0;
  std::chrono::steady_clock::time_point last_report;
  bool stopping = false, writer_waiting = false, writer_gathering = false, writer_exited = false;

  // Whether the writer should write what it has now rather than at the end
  // of its window.
  bool batch_due() const {
    return stopping || flush_wanted > written || queue.size() >= options.batch_lines ||
           queued_bytes >= options.batch_bytes;
  }
  // Whether the line just queued took the queue past a batch threshold: a
  // gathering writer is woken once per batch, by the line that crosses.
  bool crossed_threshold(size_t line_size) const {
    return queue.size() == options.batch_lines ||
           (queued_bytes >= options.batch_bytes && queued_bytes - line_size < options.batch_bytes);
  }

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

void LogSink::State::run(std::shared_ptr<State> self) {
  State& s = *self;
  std::unique_lock<std::mutex> lock(s.mu);
  // A batch was written within the last window: more lines are likely, so
  // the writer gathers on its timer instead of waiting to be woken. Lines
  // come one per call, and a wake-up per line costs its caller a futex wake
  // and the thread switch behind it.
  bool busy = false;
  while (true) {
    while (!busy && s.queue.empty() && !s.stopping && !s.report_due(std::chrono::steady_clock::now())) {
      s.writer_waiting = true;
      if (s.dropped > s.reported) {
        s.wake.wait_until(lock, s.last_report + s.options.report_every);
      } else {
        s.wake.wait(lock);
      }
      s.writer_waiting = false;
    }
    if (s.stopping && s.queue.empty()) break;
    if (!s.batch_due()) {
      s.writer_gathering = true;
      s.wake.wait_for(lock, s.options.batch_window, [&s] { return s.batch_due(); });
      s.writer_gathering = false;
    }
    const bool report = s.report_due(std::chrono::steady_clock::now());
    if (s.queue.empty() && !report) {
      busy = false;  // a quiet window: wait to be woken
      continue;
    }
    std::string batch;
    batch.reserve(s.queued_bytes);
    for (const std::string& line : s.queue) batch += line;
    size_t lines = s.queue.size();
    s.queue.clear();
    s.queued_bytes = 0;
    if (report) batch += s.drop_report();
    lock.unlock();
    {
      std::lock_guard<std::timed_mutex> fd_lock(s.fd_mu);
      write_all(s.options.fd, batch, -1);
    }
    lock.lock();
    s.written += lines;
    busy = lines > 0;
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
  const size_t size = line.size();
  s.queued_bytes += size;
  s.queue.push_back(std::move(line));
  s.accepted++;
  bool wake = s.writer_waiting || (s.writer_gathering && s.crossed_threshold(size));
  lock.unlock();
  if (wake) s.wake.notify_one();
}

bool LogSink::flush(std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  uint64_t target = s.accepted;
  if (s.written < target) {
    // Ends the writer's window now rather than when it would.
    s.flush_wanted = std::max(s.flush_wanted, target);
    s.wake.notify_one();
  }
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

void Logger::write(LogLine&& line) {
  sink_.write(line.finish());
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
