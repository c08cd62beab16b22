#include "plan/paths.h"

#include <charconv>

namespace owrap {

namespace {

Result<std::string> unescape(std::string_view raw, std::string_view pointer) {
  if (raw.find('~') == std::string_view::npos) return std::string(raw);
  std::string out;
  for (size_t i = 0; i < raw.size(); i++) {
    if (raw[i] != '~') {
      out += raw[i];
      continue;
    }
    char next = i + 1 < raw.size() ? raw[i + 1] : '\0';
    if (next != '0' && next != '1') {
      return Error{"\"" + std::string(pointer) + "\" is not a JSON pointer: `~` must be followed by 0 or 1"};
    }
    out += next == '0' ? '~' : '/';
    i++;
  }
  return out;
}

}  // namespace

std::optional<size_t> array_index(std::string_view token) {
  if (token.empty() || (token.size() > 1 && token[0] == '0')) return std::nullopt;
  size_t value = 0;
  auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec != std::errc() || end != token.data() + token.size()) return std::nullopt;
  return value;
}

Result<PathTokens> parse_pointer(std::string_view pointer) {
  PathTokens tokens;
  if (pointer.empty()) return tokens;
  if (pointer.front() != '/') {
    return Error{"\"" + std::string(pointer) + "\" is not a JSON pointer: it must be empty or start with /"};
  }
  size_t start = 1;
  while (true) {
    size_t end = pointer.find('/', start);
    auto token = unescape(pointer.substr(start, end == std::string_view::npos ? end : end - start), pointer);
    if (!token) return Error{token.error()};
    tokens.push_back(std::move(token.value()));
    if (end == std::string_view::npos) return tokens;
    start = end + 1;
  }
}

void append_escaped(std::string& out, std::string_view token) {
  if (token.find_first_of("~/") == std::string_view::npos) {
    out.append(token);
    return;
  }
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
}

std::string escape_token(std::string_view token) {
  std::string out;
  append_escaped(out, token);
  return out;
}

std::string to_pointer(const PathTokens& tokens) {
  std::string out;
  for (const auto& token : tokens) {
    out += '/';
    append_escaped(out, token);
  }
  return out;
}

bool starts_with(const PathTokens& path, const PathTokens& prefix) {
  if (path.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); i++) {
    if (path[i] != prefix[i]) return false;
  }
  return true;
}

Result<PathPattern> PathPattern::parse(std::string_view pattern) {
  auto tokens = parse_pointer(pattern);
  if (!tokens) return Error{tokens.error()};
  if (tokens->empty()) return Error{"\"\" would protect the whole plan; name a path below it"};
  PathPattern out;
  out.tokens_ = std::move(tokens.value());
  out.text_ = std::string(pattern);
  return out;
}

bool PathPattern::token_matches(size_t i, const std::string& token) const {
  const std::string& want = tokens_[i];
  if (!want.empty() && want.back() == '*') return token.compare(0, want.size() - 1, want, 0, want.size() - 1) == 0;
  return token == want;
}

bool PathPattern::covers(const PathTokens& path) const {
  if (path.size() < tokens_.size()) return false;
  for (size_t i = 0; i < tokens_.size(); i++) {
    if (!token_matches(i, path[i])) return false;
  }
  return true;
}

bool PathPattern::is_below(const PathTokens& path) const {
  if (path.size() >= tokens_.size()) return false;
  for (size_t i = 0; i < path.size(); i++) {
    if (!token_matches(i, path[i])) return false;
  }
  return true;
}

}  // namespace owrap
