// Reads a child's stdout and stderr line by line on its own thread. Stopping
// never waits for the pipes to close: a helper the child started may hold
// them open for ever, and write to them without pause. What the pipes hold
// when the pump sees the stop request is still delivered (a child that has
// exited left all its last words there); what a writer adds while that is
// read is not.
#pragma once

#include "common/uds.h"

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace owrap {

enum class OutputStream { kStdout, kStderr };

class OutputPump {
 public:
  using LineSink = std::function<void(OutputStream, std::string_view line)>;
  // `out_fd` and `err_fd` must be non-blocking and outlive the pump.
  OutputPump(int out_fd, int err_fd, LineSink sink);
  ~OutputPump() { stop(); }
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  // Delivers what the pipes hold now, then ends the thread. Idempotent.
  void stop();

 private:
  struct Stream {
    int fd;
    OutputStream which;
    std::string partial;
    bool open = true;
  };
  void run();
  // Reads until the pipe would block or closes, or `budget` bytes were
  // read; false once it closed.
  bool drain(Stream& s, size_t budget);
  void emit(Stream& s, std::string_view line);

  Stream streams_[2];
  LineSink sink_;
  UniqueFd wake_;
  std::thread thread_;
};

}  // namespace owrap
