#include "common/log.h"

#include "support/harness.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <sstream>
#include <thread>

namespace {

using owrap::Logger;
using owrap::LogLevel;
using owrap::LogSink;

// A pipe whose read end is drained by a thread only once start() is called.
struct Pipe {
  int fds[2] = {-1, -1};
  std::string data;
  std::thread reader;
  Pipe() { REQUIRE(::pipe2(fds, O_CLOEXEC) == 0); }
  ~Pipe() {
    close_write();
    if (reader.joinable()) reader.join();
    ::close(fds[0]);
  }
  int write_fd() const { return fds[1]; }
  void start() {
    reader = std::thread([this] {
      char buf[65536];
      for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) data.append(buf, static_cast<size_t>(n));
    });
  }
  void close_write() {
    if (fds[1] >= 0) ::close(fds[1]);
    fds[1] = -1;
  }
  // Closes the write end and returns everything written.
  std::string finish() {
    close_write();
    reader.join();
    return data;
  }
};

// Whether anything reached the pipe within `ms`, read by no one yet.
bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

LogSink::Options batching(int fd, std::chrono::milliseconds window, size_t lines, size_t bytes) {
  LogSink::Options o;
  o.fd = fd;
  o.max_lines = 100000;
  o.batch_window = window;
  o.batch_lines = lines;
  o.batch_bytes = bytes;
  return o;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    INFO(line);
    REQUIRE_FALSE(j.is_discarded());
    out.push_back(j);
  }
  return out;
}

}  // namespace

TEST_CASE("a stuck log reader never blocks write(); drops are counted, reported, and lines stay in order", "[log]") {
  Pipe pipe;  // nobody reads it yet: the writer blocks once the pipe is full
  constexpr int kLines = 20000;
  auto logger =
      std::make_unique<Logger>(LogSink::Options{pipe.write_fd(), 256, size_t{1} << 20, std::chrono::milliseconds(100)});
  // On a thread of its own, so a write() that blocks fails the test instead
  // of hanging it.
  auto writes = std::async(std::launch::async, [&] {
    auto slowest = std::chrono::nanoseconds::zero();
    for (int i = 0; i < kLines; i++) {
      auto start = std::chrono::steady_clock::now();
      logger->write(LogLevel::kInfo, "line", {{"seq", i}, {"padding", std::string(80, 'x')}});
      slowest = std::max(slowest, std::chrono::steady_clock::now() - start);
    }
    return slowest;
  });
  bool returned = writes.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  if (!returned) pipe.start();  // unblock the writer so the test can end
  REQUIRE(returned);
  auto slowest = writes.get();
  INFO("slowest write(): " << std::chrono::duration_cast<std::chrono::microseconds>(slowest).count() << " us");
  CHECK(slowest < std::chrono::milliseconds(500));
  uint64_t dropped = logger->dropped();
  CHECK(dropped > 0);
  CHECK(dropped < static_cast<uint64_t>(kLines));

  pipe.start();
  CHECK(logger->flush());
  logger->shutdown();
  CHECK(logger->dropped() == dropped);
  logger.reset();
  auto lines = json_lines(pipe.finish());

  int64_t last_seq = -1;
  uint64_t received = 0, reported = 0;
  for (const auto& j : lines) {
    if (j["message"] == "line") {
      CHECK(j["seq"].get<int64_t>() > last_seq);
      last_seq = j["seq"].get<int64_t>();
      received++;
    } else {
      REQUIRE(j["message"] == "log lines dropped");
      CHECK(j["level"] == "warn");
      reported += j["dropped"].get<uint64_t>();
      CHECK(j["total_dropped"].get<uint64_t>() == reported);
    }
  }
  CHECK(received + dropped == kLines);
  CHECK(reported == dropped);
}

TEST_CASE("a logger writes every accepted line before shutdown returns, then writes synchronously", "[log]") {
  Pipe pipe;
  pipe.start();
  Logger logger(LogSink::Options{pipe.write_fd()});
  for (int i = 0; i < 3000; i++) logger.write(LogLevel::kInfo, "line", {{"seq", i}});
  logger.write(LogLevel::kInfo, "stopped");
  logger.shutdown();
  logger.write(LogLevel::kError, "after shutdown");  // an atexit path
  CHECK(logger.dropped() == 0);
  auto lines = json_lines(pipe.finish());
  REQUIRE(lines.size() == 3002);
  for (int i = 0; i < 3000; i++) CHECK(lines[i]["seq"] == i);
  CHECK(lines[3000]["message"] == "stopped");
  CHECK(lines[3001]["message"] == "after shutdown");
  CHECK(lines[3001]["level"] == "error");
}

TEST_CASE("lines from several threads arrive whole and in each thread's order", "[log]") {
  Pipe pipe;
  pipe.start();
  auto logger = std::make_unique<Logger>(LogSink::Options{pipe.write_fd(), 100000});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; i++) logger->write(LogLevel::kInfo, "line", {{"thread", t}, {"seq", i}});
    });
  }
  for (auto& th : threads) th.join();
  logger.reset();  // the destructor flushes
  auto lines = json_lines(pipe.finish());
  REQUIRE(lines.size() == 8000);
  int next[4] = {0, 0, 0, 0};
  for (const auto& j : lines) CHECK(j["seq"] == next[j["thread"].get<int>()]++);
}

// Run as a child of the next test: logs a burst through the process logger
// and returns from main() at once.
TEST_CASE("log child: a burst of lines, then return from main", "[.log_child]") {
  for (int i = 0; i < 3000; i++) owrap::log_info("line", {{"seq", i}});
  owrap::log_info("last");
}

TEST_CASE("returning from main() loses no queued log line", "[log]") {
  owrap::test::TempDir dir;
  std::string exe(4096, '\0');
  exe.resize(static_cast<size_t>(::readlink("/proc/self/exe", exe.data(), exe.size())));
  owrap::test::Process child({exe, "[.log_child]"}, dir.file("child.log"));
  REQUIRE(child.wait() == 0);
  std::vector<nlohmann::json> lines;
  std::istringstream in(child.log());
  for (std::string line; std::getline(in, line);) {  // Catch's own summary is not JSON
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) lines.push_back(j);
  }
  REQUIRE(lines.size() == 3001);
  for (int i = 0; i < 3000; i++) CHECK(lines[i]["seq"] == i);
  CHECK(lines[3000]["message"] == "last");
}

TEST_CASE("a logger that never logged stops at once, also when stopped twice", "[log]") {
  // main()'s LogShutdownGuard stops the logger, then the atexit handler stops
  // it again: every CLI command that logs nothing used to exit 2 s late.
  Pipe pipe;
  pipe.start();
  Logger logger(LogSink::Options{pipe.write_fd()});
  auto start = std::chrono::steady_clock::now();
  logger.shutdown();
  logger.shutdown();
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(500));
  logger.write(LogLevel::kInfo, "after shutdown");
  auto lines = json_lines(pipe.finish());
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["message"] == "after shutdown");
}

TEST_CASE("the writer holds lines for its window; flush() and stop() write them at once", "[log]") {
  Pipe pipe;  // read only at the end: the first lines fit in its buffer
  Logger logger(batching(pipe.write_fd(), std::chrono::minutes(1), 1000, size_t{1} << 20));
  logger.write(LogLevel::kInfo, "first");
  // Woken by the first line, the writer gathers for its window.
  CHECK_FALSE(readable(pipe.fds[0], 300));
  auto start = std::chrono::steady_clock::now();
  CHECK(logger.flush());
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  CHECK(readable(pipe.fds[0], 0));
  logger.write(LogLevel::kInfo, "second");
  start = std::chrono::steady_clock::now();
  logger.shutdown();
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  pipe.start();
  auto lines = json_lines(pipe.finish());
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["message"] == "first");
  CHECK(lines[1]["message"] == "second");
}

TEST_CASE("lines past the batch thresholds are written without waiting for the window", "[log]") {
  Pipe pipe;  // read only at the end: 20 KiB fit in its buffer
  const bool by_bytes = GENERATE(false, true);
  // Lines of ~1 KiB: a batch is due past 10 lines, or past 8 KiB.
  Logger logger(batching(pipe.write_fd(), std::chrono::minutes(1), by_bytes ? 1000 : 10, 8 << 10));
  auto line = [&](int i) { logger.write(LogLevel::kInfo, "line", {{"seq", i}, {"pad", std::string(1000, 'x')}}); };
  line(0);
  CHECK_FALSE(readable(pipe.fds[0], 300));  // the writer is gathering now
  for (int i = 1; i < 20; i++) line(i);
  // Within test time, not the one-minute window.
  CHECK(readable(pipe.fds[0], 5000));
  logger.shutdown();
  pipe.start();
  auto lines = json_lines(pipe.finish());
  REQUIRE(lines.size() == 20);
  for (int i = 0; i < 20; i++) CHECK(lines[i]["seq"] == i);
}

TEST_CASE("a burst from several threads with small batches loses and reorders nothing", "[log]") {
  Pipe pipe;
  pipe.start();
  auto logger = std::make_unique<Logger>(batching(pipe.write_fd(), std::chrono::minutes(1), 64, 16 << 10));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; i++) logger->write(LogLevel::kInfo, "line", {{"thread", t}, {"seq", i}});
    });
  }
  for (auto& th : threads) th.join();
  CHECK(logger->flush());
  CHECK(logger->dropped() == 0);
  logger.reset();
  auto lines = json_lines(pipe.finish());
  REQUIRE(lines.size() == 20000);
  int next[4] = {0, 0, 0, 0};
  for (const auto& j : lines) CHECK(j["seq"] == next[j["thread"].get<int>()]++);
}
