// What an exec hook's process said, turned into a HookOutcome: its exit
// status, its stdout (one HookResponse as protobuf JSON) and its stderr
// (lines for the wrapper's log, the last one for the failure message).
#pragma once

#include "delegates/child_process.h"
#include "hooks/hook.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace owrap {

// Splits an exec hook's stderr into lines, logs each at warn with the hook's
// name ({"hook": name}), each capped, and at most a bounded number per
// invocation so a chatty hook cannot flood the log.
class StderrLines {
 public:
  static constexpr size_t kMaxLine = 4096;
  static constexpr size_t kMaxLogged = 100;

  explicit StderrLines(std::string hook) : hook_(std::move(hook)) {}
  void append(std::string_view bytes);
  // Flushes an unterminated last line and reports suppressed lines.
  void finish();
  // The last non-empty line, for the failure message.
  const std::string& last_line() const { return last_; }

 private:
  void emit(std::string_view line);
  std::string hook_;
  std::string partial_;
  bool overlong_ = false;  // the current line passed kMaxLine; the rest is dropped
  std::string last_;
  size_t logged_ = 0, suppressed_ = 0;
};

// The outcome of a process that exited by itself (not killed by the
// wrapper): its exit status first, then its stdout.
HookOutcome judge_exec_reply(const ExitInfo& exit, const std::string& stdout_text, const std::string& last_stderr);

}  // namespace owrap
