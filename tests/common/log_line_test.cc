// LogLine and format_log_line against the nlohmann path they replaced: the
// same bytes for the same fields, whatever the strings hold.
#include "common/log.h"

#include "proxy/unary_call.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <regex>
#include <string>
#include <variant>
#include <vector>

namespace {

using owrap::LogLevel;
using owrap::LogLine;

// The line as format_log_line made it before LogLine, with a given time.
std::string reference_line(LogLevel level, std::string_view message, const nlohmann::json& fields,
                           const std::string& time) {
  nlohmann::json line = nlohmann::json::object();
  line["time"] = time;
  line["level"] = owrap::log_level_name(level);
  line["message"] = message;
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) line[k] = v;
  }
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  return text;
}

// Strings made of the pieces JSON escaping and UTF-8 repair get wrong.
class Strings {
 public:
  explicit Strings(uint32_t seed) : rng_(seed) {}

  std::string next() {
    size_t pieces = pick(8) == 0 ? 0 : pick(40);
    if (pick(200) == 0) pieces = 200000;  // huge: a few MB at most
    std::string s;
    for (size_t i = 0; i < pieces; i++) s += piece();
    return s;
  }
  uint64_t pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::string piece() {
    static const std::vector<std::string> fixed = {
        "plain text",
        "\"",
        "\\",
        "\\\"",
        "/",
        std::string(1, '\0'),
        "\x7f",
        "\b\t\n\f\r",
        "\x01\x1f\x0b",
        "\xC3\xA9",          // é
        "\xE2\x82\xAC",      // €
        "\xF0\x9F\x98\x80",  // an emoji
        "\xEF\xBF\xBD",      // U+FFFD itself
        "\xED\xA0\x80",      // a surrogate: invalid
        "\xC0\xAF",
        "\xE0\x80\xAF",
        "\xF0\x80\x80\xAF",  // overlong
        "\xF4\x90\x80\x80",  // past U+10FFFF
        "\xE2\x82",
        "\xF0\x9F\x98",
        "\xC3",  // cut short
        "\x80",
        "\xBF",
        "\xFE",
        "\xFF",
        "\xF5",  // never valid
    };
    switch (pick(4)) {
      case 0:
        return fixed[pick(fixed.size())];
      case 1:
        return std::string(1, static_cast<char>(pick(256)));
      case 2: {
        std::string s;
        for (uint64_t n = 1 + pick(6); n > 0; n--) s.push_back(static_cast<char>(0x80 + pick(0x80)));
        return s;
      }
      default:
        return std::string(1 + pick(20), static_cast<char>('a' + pick(26)));
    }
  }

  std::mt19937_64 rng_;
};

// One field both ways: typed into LogLine, and as the JSON the old path got.
struct Field {
  std::string key;
  std::variant<std::string, int64_t, uint64_t, bool, double, nlohmann::json> value;
};

void add_to(LogLine& line, const Field& f) {
  std::visit(
      [&](const auto& v) {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, nlohmann::json>) {
          line.add_json(f.key, v);
        } else {
          line.add(f.key, v);
        }
      },
      f.value);
}

nlohmann::json as_json(const Field& f) {
  return std::visit([](const auto& v) { return nlohmann::json(v); }, f.value);
}

Field random_field(Strings& strings) {
  static const std::vector<std::string> keys = {"time",  "level",      "message", "rpc", "status", "sandbox_id",
                                                "error", "latency_us", "a",       "zz",  "",       "Z",
                                                "\xFF",  "k\"ey",      "k\\ey",   "\n"};
  Field f;
  f.key = strings.pick(4) == 0 ? strings.next() : keys[strings.pick(keys.size())];
  auto& rng = strings.rng();
  switch (strings.pick(7)) {
    case 0:
      f.value = static_cast<int64_t>(rng());
      break;
    case 1:
      f.value = static_cast<uint64_t>(rng());
      break;
    case 2:
      f.value = strings.pick(2) == 0;
      break;
    case 3: {
      static const double special[] = {0.0,
                                       -0.0,
                                       1.0,
                                       0.1,
                                       1e300,
                                       -1e-300,
                                       std::numeric_limits<double>::quiet_NaN(),
                                       std::numeric_limits<double>::infinity()};
      f.value =
          strings.pick(2) == 0 ? special[strings.pick(8)] : std::uniform_real_distribution<double>(-1e6, 1e6)(rng);
      break;
    }
    case 4:
      f.value = nlohmann::json{{strings.next(), strings.next()}, {"n", {1, 2.5, nullptr, strings.next()}}};
      break;
    default:
      f.value = strings.next();
  }
  return f;
}

}  // namespace

TEST_CASE("LogLine writes the bytes the nlohmann path wrote, for random fields", "[log]") {
  Strings strings(GENERATE(1u, 2u, 3u, 4u));
  for (int round = 0; round < 300; round++) {
    const auto level = static_cast<LogLevel>(strings.pick(4));
    const std::string message = strings.next(), time = strings.pick(2) ? "2026-11-26T06:00:00.123456Z" : strings.next();
    LogLine line(level, message, time);
    nlohmann::json fields = nlohmann::json::object();
    for (uint64_t n = strings.pick(10); n > 0; n--) {
      Field f = random_field(strings);
      add_to(line, f);
      fields[f.key] = as_json(f);  // a later field of the same key replaces the earlier
    }
    const std::string expected = reference_line(level, message, fields, time);
    const std::string got = line.finish();
    INFO("round " << round);
    REQUIRE(got.size() == expected.size());
    REQUIRE(got == expected);
  }
}

TEST_CASE("format_log_line writes the bytes the nlohmann path wrote", "[log]") {
  Strings strings(GENERATE(11u, 12u));
  for (int round = 0; round < 300; round++) {
    const auto level = static_cast<LogLevel>(strings.pick(4));
    const std::string message = strings.next();
    nlohmann::json fields = nlohmann::json::object();
    for (uint64_t n = strings.pick(10); n > 0; n--) {
      Field f = random_field(strings);
      if (f.key == "time") f.key = "timestamp";  // the time is the line's own, read back below
      fields[f.key] = as_json(f);
    }
    const std::string got = owrap::format_log_line(level, message, fields);
    auto parsed = nlohmann::json::parse(got, nullptr, false);
    REQUIRE_FALSE(parsed.is_discarded());
    INFO("round " << round);
    const std::string time = parsed["time"].get<std::string>();
    REQUIRE(std::regex_match(time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)")));
    REQUIRE(got == reference_line(level, message, fields, time));
  }
}

TEST_CASE("append_json_escaped repairs UTF-8 as nlohmann's replace handler does", "[log]") {
  auto escaped = [](std::string_view s) {
    std::string out;
    owrap::append_json_escaped(out, s);
    return out;
  };
  CHECK(escaped("a\"b\\c\n\x01\x7f") == "a\\\"b\\\\c\\n\\u0001\x7f");
  CHECK(escaped("\xE2\x82X") == "\xEF\xBF\xBDX");            // cut short: the next byte is read again
  CHECK(escaped("\x80X") == "\xEF\xBF\xBDX");                // a lone continuation byte
  CHECK(escaped("\xE2\x82") == "\xEF\xBF\xBD");              // cut short by the end
  CHECK(escaped("\xE2\x82\xAC") == "\xE2\x82\xAC");          // valid, copied
  CHECK(escaped("\xC3\xC3\xA9") == "\xEF\xBF\xBD\xC3\xA9");  // the rejecting byte starts a valid sequence
}

TEST_CASE("the access-log line has today's keys, order and value types", "[log]") {
  const std::vector<std::string> secrets = {"s3cret"};
  owrap::CallLogEntry entry{"GetSandbox", "sb-\"1\"\xFF", true, false, &secrets};
  grpc::Status failed(grpc::StatusCode::NOT_FOUND, "no sandbox s3cret\n");
  for (const grpc::Status& s : {grpc::Status::OK, failed}) {
    const std::string got = owrap::call_log_line(entry, std::chrono::microseconds(1234), s, LogLevel::kWarn).finish();
    auto parsed = nlohmann::json::parse(got, nullptr, false);
    REQUIRE_FALSE(parsed.is_discarded());
    // The fields log_call built as JSON before LogLine.
    nlohmann::json fields = {
        {"rpc", entry.rpc}, {"latency_us", int64_t{1234}}, {"status", s.ok() ? "OK" : "NOT_FOUND"}};
    fields["sandbox_id"] = entry.sandbox_id;
    fields["passthrough"] = true;
    fields["delivered"] = false;
    if (!s.ok()) fields["error"] = "no sandbox [REDACTED]\n";
    INFO(got);
    CHECK(got == reference_line(LogLevel::kWarn, "rpc", fields, parsed["time"].get<std::string>()));
  }
}

TEST_CASE("log_at given a callable builds its fields only when the level is on", "[log]") {
  auto& logger = owrap::Logger::instance();
  const LogLevel before = logger.level();
  int built = 0;
  auto fields = [&] {
    built++;
    return nlohmann::json{{"n", built}};
  };
  logger.set_level(LogLevel::kError);
  owrap::log_at(LogLevel::kDebug, "lazy", fields);
  owrap::log_at(LogLevel::kInfo, "lazy", fields);
  owrap::log_at(LogLevel::kWarn, "lazy", fields);
  CHECK(built == 0);
  logger.set_level(LogLevel::kWarn);
  owrap::log_at(LogLevel::kWarn, "lazy", fields);
  CHECK(built == 1);
  logger.set_level(before);
}
