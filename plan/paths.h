// JSON pointers (RFC 6901) as token lists, and the path patterns that name
// protected parts of the plan. A pattern is a JSON pointer whose tokens may
// end in `*`, meaning "any key starting with what precedes it"
// (`/spec/environment/OPENSHELL_*`); a lone `*` matches any one token.
#pragma once

#include "common/result.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

using PathTokens = std::vector<std::string>;

// "/a~1b/c" -> {"a/b", "c"}; "" -> {} (the whole document).
Result<PathTokens> parse_pointer(std::string_view pointer);
// The inverse: escapes `~` and `/` in every token.
std::string to_pointer(const PathTokens& tokens);
// One token, escaped: "a/b" -> "a~1b", "~" -> "~0".
std::string escape_token(std::string_view token);
// The same, appended to `out`.
void append_escaped(std::string& out, std::string_view token);
// An RFC 6901 array index: digits without a leading zero.
std::optional<size_t> array_index(std::string_view token);
// `path` equals `prefix` or lies beneath it.
bool starts_with(const PathTokens& path, const PathTokens& prefix);

class PathPattern {
 public:
  static Result<PathPattern> parse(std::string_view pattern);
  // The path is the protected part itself or lies beneath it.
  bool covers(const PathTokens& path) const;
  // The path is a strict ancestor of what the pattern protects: replacing or
  // removing it would replace or remove the protected part too.
  bool is_below(const PathTokens& path) const;
  const std::string& text() const { return text_; }

 private:
  bool token_matches(size_t i, const std::string& token) const;
  PathTokens tokens_;
  std::string text_;
};

}  // namespace owrap
