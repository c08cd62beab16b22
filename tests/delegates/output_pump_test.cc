// OutputPump (delegates/output_pump.h) on real pipes: what stop() still
// delivers, and how long it takes, while a writer keeps the pipe full.
#include "delegates/output_pump.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

using namespace owrap;
using namespace std::chrono_literals;

namespace {
// Both ends of a pipe, the read end non-blocking as ChildProcess makes it.
struct TestPipe {
  int fd[2] = {-1, -1};
  TestPipe() {
    REQUIRE(::pipe2(fd, O_CLOEXEC) == 0);
    // The write end too, so the writer below can be told to stop.
    for (int f : fd) ::fcntl(f, F_SETFL, ::fcntl(f, F_GETFL) | O_NONBLOCK);
  }
  ~TestPipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
};

// A sink a little slower than a pipe writer, as the wrapper's log is: the
// writer refills the pipe faster than the pump empties it.
void spin(std::chrono::nanoseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}
}  // namespace

TEST_CASE("stopping the pump reads what the pipe held, not what a flooding writer adds meanwhile", "[output_pump]") {
  TestPipe out, err;
  const std::string line = "floodfloodflood\n";  // 16 bytes
  std::atomic<bool> flooding{true};
  // A helper that left the child's process group, writing without pause.
  std::thread writer([&] {
    std::string block;
    while (block.size() < 4096) block += line;
    while (flooding.load()) {
      if (::write(err.fd[1], block.data(), block.size()) >= 0 || errno == EINTR) continue;
      if (errno != EAGAIN) break;
      pollfd p{err.fd[1], POLLOUT, 0};
      ::poll(&p, 1, 10);
    }
  });
  std::atomic<size_t> lines{0};
  // The sink waits at `hold` so the count is exact while stop() is asked.
  std::atomic<bool> hold{false}, held{false};
  {
    OutputPump pump(out.fd[0], err.fd[0], [&](OutputStream, std::string_view) {
      lines++;
      while (hold.load()) {
        held = true;
        std::this_thread::sleep_for(1ms);
      }
      spin(2us);
    });
    std::this_thread::sleep_for(200ms);
    hold = true;
    while (!held.load()) std::this_thread::sleep_for(1ms);
    size_t before = lines.load();
    auto asked = std::chrono::steady_clock::now();
    std::thread stopper([&] { pump.stop(); });
    std::this_thread::sleep_for(100ms);  // for the stop request to be made
    hold = false;
    stopper.join();
    auto took = std::chrono::steady_clock::now() - asked;
    size_t after_stop = lines.load() - before;
    // The rest of the round in progress (64 KiB) and what the pipe held
    // (64 KiB by default): 8192 lines of 16 bytes, with room for rounds a
    // slow stopper thread lets start. Chasing the writer, stop() read on to
    // its 1 MiB bound: over 65536 lines.
    CHECK(after_stop <= 32768);
    INFO("stop() took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    CHECK(took < 2s);
  }
  flooding = false;
  writer.join();
}
