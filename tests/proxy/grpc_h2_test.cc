#include "proxy/grpc_h2.h"

#include <nghttp2/nghttp2.h>
#include <catch2/catch.hpp>

#include <random>

using namespace owrap;

TEST_CASE("grpc-timeout: every unit, and what is not a timeout", "[grpc_h2]") {
  CHECK(parse_grpc_timeout("100m") == std::chrono::milliseconds(100));
  CHECK(parse_grpc_timeout("2S") == std::chrono::seconds(2));
  CHECK(parse_grpc_timeout("1H") == std::chrono::hours(1));
  CHECK(parse_grpc_timeout("3M") == std::chrono::minutes(3));
  CHECK(parse_grpc_timeout("99999999u") == std::chrono::microseconds(99999999));
  CHECK(parse_grpc_timeout("5n") == std::chrono::nanoseconds(5));
  // 99999999H (what tonic sends for a Duration too large to write) and
  // 99999999M are past int64 nanoseconds: they saturate, never wrap.
  CHECK(parse_grpc_timeout("99999999H") == kMaxGrpcTimeout);
  CHECK(parse_grpc_timeout("2562048H") == kMaxGrpcTimeout);
  CHECK(parse_grpc_timeout("99999999M") == kMaxGrpcTimeout);
  CHECK(parse_grpc_timeout("876000H") == std::chrono::hours(876000));
  CHECK(parse_grpc_timeout("99999999S") == std::chrono::seconds(99999999));
  for (const char* bad : {"", "m", "100", "123456789m", "-1m", "1x", "1.5S", " 1S"}) {
    INFO(bad);
    CHECK_FALSE(parse_grpc_timeout(bad).has_value());
  }
  // What is sent on always parses back to about the same time, never 0.
  for (auto left :
       {std::chrono::nanoseconds(0), std::chrono::nanoseconds(-5), std::chrono::nanoseconds(1500),
        std::chrono::nanoseconds(std::chrono::seconds(7)), std::chrono::nanoseconds(std::chrono::hours(24 * 400))}) {
    auto back = parse_grpc_timeout(format_grpc_timeout(left));
    REQUIRE(back.has_value());
    CHECK(*back >= std::chrono::microseconds(1));
    if (left > std::chrono::seconds(1) && left < std::chrono::hours(24)) CHECK(*back == left);
  }
}

TEST_CASE("grpc-message: percent encoding round-trips any bytes and leaves printable text alone", "[grpc_h2]") {
  CHECK(percent_encode("plain text: ok") == "plain text: ok");
  CHECK(percent_encode("100%\n") == "100%25%0A");
  CHECK(percent_decode("100%25%0A") == "100%\n");
  CHECK(percent_decode("broken %zz and %4") == "broken %zz and %4");
  std::mt19937 rng(7);
  for (int i = 0; i < 500; i++) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    std::string enc = percent_encode(s);
    for (unsigned char c : enc) CHECK((c >= 0x20 && c <= 0x7e));
    CHECK(percent_decode(enc) == s);
  }
}

TEST_CASE("message framing: exactly one uncompressed message", "[grpc_h2]") {
  std::string framed = framed_message("abc");
  REQUIRE(framed.size() == 8);
  CHECK(single_message(framed) == std::string_view("abc"));
  CHECK(single_message(framed_message("")) == std::string_view(""));
  CHECK_FALSE(single_message("").has_value());
  CHECK_FALSE(single_message(framed.substr(0, 7)).has_value());  // cut short
  CHECK_FALSE(single_message(framed + framed).has_value());      // two messages
  std::string compressed = framed;
  compressed[0] = 1;
  CHECK_FALSE(single_message(compressed).has_value());
}

TEST_CASE("a unary request's message, as gRPC's server takes it", "[grpc_h2]") {
  std::string framed = framed_message("abc");
  CHECK(first_message(framed) == std::string_view("abc"));
  CHECK(first_message(framed + framed_message("second")) == std::string_view("abc"));  // the rest is never read
  std::string flagged = framed;
  flagged[0] = 1;  // no encoding: the flag means nothing
  CHECK(first_message(flagged) == std::string_view("abc"));
  CHECK(first_message(framed_message("")) == std::string_view(""));
  CHECK_FALSE(first_message("").has_value());
  CHECK_FALSE(first_message(framed.substr(0, 4)).has_value());
  CHECK_FALSE(first_message(framed.substr(0, 7)).has_value());
  CHECK_FALSE(first_message(std::string("\0\xff\xff\xff\xff", 5) + "abc").has_value());
  std::string bad_flag = framed;
  bad_flag[0] = 2;
  CHECK_FALSE(first_message(bad_flag).has_value());
}

TEST_CASE("binary headers: base64 without padding, either form read back", "[grpc_h2]") {
  CHECK(encode_binary_header("ab") == "YWI");
  CHECK(decode_binary_header("YWI") == "ab");
  CHECK(decode_binary_header("YWI=") == "ab");
  CHECK(decode_binary_header("!!!").empty());
}

TEST_CASE("an answer's status as gRPC's client reports it", "[grpc_h2]") {
  const std::string lost_text = "delegate \"memory\" is unavailable: the connection was lost";
  auto lost = [&] { return lost_text; };
  H2Answer ok;
  ok.add_headers({{":status", "200"}, {"content-type", "application/grpc"}}, false);
  ok.add_headers({{"grpc-status", "0"}}, true);
  CHECK(ok.status(0, lost).ok());
  CHECK(ok.has_grpc_status());

  H2Answer refused;  // trailers-only
  refused.add_headers({{":status", "200"},
                       {"grpc-status", "5"},
                       {"grpc-message", "no sandbox %22x%22"},
                       {"grpc-status-details-bin", encode_binary_header("details")}},
                      true);
  grpc::Status s = refused.status(0, lost);
  CHECK(s.error_code() == grpc::StatusCode::NOT_FOUND);
  CHECK(s.error_message() == "no sandbox \"x\"");
  CHECK(s.error_details() == "details");
  CHECK(refused.headers.empty());

  H2Answer odd;
  odd.add_headers({{":status", "200"}}, false);
  odd.add_headers({{"grpc-status", "99"}, {"grpc-message", "m"}}, true);
  CHECK(odd.status(0, lost).error_code() == grpc::StatusCode::UNKNOWN);

  H2Answer http;
  http.add_headers({{":status", "503"}}, true);
  CHECK(http.status(0, lost).error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(http.status(0, lost).error_message() == "Received http2 header with status: 503");

  H2Answer none;
  CHECK(none.status(kConnectionLost, lost).error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(none.status(kConnectionLost, lost).error_message() == lost_text);
  CHECK(none.status(NGHTTP2_CANCEL, lost).error_code() == grpc::StatusCode::CANCELLED);
  CHECK(none.status(NGHTTP2_REFUSED_STREAM, lost).error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(none.status(NGHTTP2_PROTOCOL_ERROR, lost).error_code() == grpc::StatusCode::INTERNAL);
  CHECK(none.status(0, lost).error_code() == grpc::StatusCode::UNKNOWN);
}

TEST_CASE("the hop count in request headers, as wrapper_hops reads it", "[grpc_h2]") {
  CHECK(hops_of({}) == 0);
  CHECK(hops_of({{"openshell-wrapper-hops", "3"}}) == 3);
  CHECK(hops_of({{"openshell-wrapper-hops", "x3"}}) == 0);
  CHECK(hops_of({{"openshell-wrapper-hops", "99999999999"}}) == 1000000);
}
