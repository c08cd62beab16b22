#include "hooks/exec_reply.h"

#include "common/log.h"

#include <google/protobuf/util/json_util.h>

namespace owrap {

namespace {
// What a failure message quotes of the hook's own words (a stderr line, the
// JSON parser's complaint, which may echo the reply).
constexpr size_t kMaxQuoted = 512;

std::string quote_hook_text(std::string_view text) {
  std::string out(text.substr(0, kMaxQuoted));
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (text.size() > kMaxQuoted) out += "...";
  return out;
}

// The JSON parser's complaint without the reply it quotes: the first line
// ("Unexpected token.") and, for a field, its name and type but not the
// value, so what the hook printed (it may be anything) never reaches the
// caller through this message.
std::string parser_complaint(std::string_view message) {
  std::string first(message.substr(0, message.find('\n')));
  const std::string value = "invalid value ", type = " for type ";
  auto v = first.find(value);
  auto t = first.rfind(type);
  if (v != std::string::npos && t != std::string::npos && t >= v + value.size())
    first.erase(v + value.size() - 1, t - (v + value.size() - 1));
  return first;
}

bool blank(const std::string& s) {
  return s.find_first_not_of(" \t\r\n") == std::string::npos;
}
}  // namespace

void StderrLines::append(std::string_view bytes) {
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    std::string_view piece = bytes.substr(0, nl);
    if (!overlong_) {
      size_t room = kMaxLine - partial_.size();
      partial_.append(piece.substr(0, room));
      if (piece.size() > room) overlong_ = true;
    }
    if (nl == std::string_view::npos) return;
    emit(partial_);
    partial_.clear();
    overlong_ = false;
    bytes.remove_prefix(nl + 1);
  }
}

void StderrLines::finish() {
  emit(partial_);
  partial_.clear();
  overlong_ = false;
  if (suppressed_ > 0) {
    log_warn("[" + hook_ + "] further stderr lines not logged", {{"hook", hook_}, {"lines", suppressed_}});
    suppressed_ = 0;
  }
}

void StderrLines::emit(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return;
  last_.assign(line);
  if (logged_ >= kMaxLogged) {
    suppressed_++;
    return;
  }
  logged_++;
  std::string message = "[" + hook_ + "] ";
  message.append(line);
  if (overlong_) message += " (truncated)";
  log_warn(message, {{"hook", hook_}, {"stream", "stderr"}});
}

HookOutcome judge_exec_reply(const ExitInfo& exit, const std::string& stdout_text, const std::string& last_stderr) {
  if (exit.code != 0 || exit.signal != 0) {
    std::string message = exit.describe();
    if (!last_stderr.empty()) message += ": " + quote_hook_text(last_stderr);
    return HookOutcome::failed(grpc::StatusCode::INTERNAL, message);
  }
  if (blank(stdout_text)) return HookOutcome::failed(grpc::StatusCode::INTERNAL, "printed nothing");
  hookpb::HookResponse response;
  google::protobuf::util::JsonParseOptions options;
  // A newer hook may answer fields this wrapper does not know yet.
  options.ignore_unknown_fields = true;
  auto status = google::protobuf::util::JsonStringToMessage(stdout_text, &response, options);
  if (!status.ok()) {
    return HookOutcome::failed(grpc::StatusCode::INTERNAL,
                               "printed a reply that is not a HookResponse: " +
                                   quote_hook_text(parser_complaint(std::string(status.message()))));
  }
  return HookOutcome::answered(std::move(response));
}

}  // namespace owrap
