#include "hooks/builtin/quantity.h"

#include <array>
#include <cctype>
#include <limits>
#include <optional>

namespace owrap {

namespace {

using u128 = unsigned __int128;
constexpr u128 kMax = std::numeric_limits<u128>::max();
constexpr size_t kMaxDigits = 30;  // keeps the mantissa far from overflow

struct Suffix {
  int pow10 = 0;
  int pow2 = 0;
};

std::optional<Suffix> suffix_scale(std::string_view s) {
  static constexpr std::array<std::pair<std::string_view, Suffix>, 16> kSuffixes = {{
      {"", {0, 0}},
      {"n", {-9, 0}},
      {"u", {-6, 0}},
      {"m", {-3, 0}},
      {"k", {3, 0}},
      {"M", {6, 0}},
      {"G", {9, 0}},
      {"T", {12, 0}},
      {"P", {15, 0}},
      {"E", {18, 0}},
      {"Ki", {0, 10}},
      {"Mi", {0, 20}},
      {"Gi", {0, 30}},
      {"Ti", {0, 40}},
      {"Pi", {0, 50}},
      {"Ei", {0, 60}},
  }};
  for (const auto& [name, scale] : kSuffixes) {
    if (name == s) return scale;
  }
  // Decimal exponent: e<int> or E<int> ("E" alone is exa, above).
  if (s.size() >= 2 && (s[0] == 'e' || s[0] == 'E')) {
    std::string_view digits = s.substr(1);
    bool negative = false;
    if (digits[0] == '+' || digits[0] == '-') {
      negative = digits[0] == '-';
      digits.remove_prefix(1);
    }
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    int value = 0;
    for (char c : digits) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
      value = value * 10 + (c - '0');
    }
    return Suffix{negative ? -value : value, 0};
  }
  return std::nullopt;
}

bool mul(u128& v, u128 factor) {
  if (v != 0 && factor > kMax / v) return false;
  v *= factor;
  return true;
}

}  // namespace

Result<Quantity> parse_quantity(std::string_view text) {
  // Made only on the way out: policy parses four quantities per create.
  auto malformed = [&] {
    return Error{"\"" + std::string(text) +
                 "\" is not a Kubernetes quantity (a number with an optional suffix: m, k, M, G, T, P, E, "
                 "Ki, Mi, Gi, Ti, Pi, Ei or an exponent such as e3)"};
  };
  std::string_view s = text;
  if (!s.empty() && s[0] == '-') return Error{"\"" + std::string(text) + "\" must not be negative"};
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  u128 mantissa = 0;
  size_t digits = 0;
  int frac_digits = 0;
  bool seen_point = false;
  size_t i = 0;
  for (; i < s.size(); i++) {
    char c = s[i];
    if (c == '.' && !seen_point) {
      seen_point = true;
      continue;
    }
    if (!std::isdigit(static_cast<unsigned char>(c))) break;
    if (seen_point) frac_digits++;
    if (mantissa == 0 && c == '0') {
      continue;  // leading zeros carry no digits
    }
    if (++digits > kMaxDigits) return Error{"\"" + std::string(text) + "\" has too many digits"};
    mantissa = mantissa * 10 + static_cast<u128>(c - '0');
  }
  size_t number_len = i;
  if (number_len == 0 || (seen_point && number_len == 1)) return malformed();
  auto scale = suffix_scale(s.substr(i));
  if (!scale) return malformed();

  u128 value = mantissa;
  auto too_large = [&] { return Error{"\"" + std::string(text) + "\" is too large"}; };
  if (!mul(value, u128{1} << scale->pow2)) return too_large();
  int pow10 = scale->pow10 - frac_digits + 9;  // nano-units
  if (pow10 >= 0) {
    for (int k = 0; k < pow10; k++) {
      if (!mul(value, 10)) return too_large();
    }
  } else {
    u128 divisor = 1;
    bool tiny = false;
    for (int k = 0; k < -pow10; k++) {
      if (!mul(divisor, 10)) {
        tiny = true;
        break;
      }
    }
    // Below a nano-unit rounds up, as Kubernetes does.
    value = tiny ? (value != 0 ? 1 : 0) : value / divisor + (value % divisor != 0 ? 1 : 0);
  }
  return Quantity{value};
}

}  // namespace owrap
