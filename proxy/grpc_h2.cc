#include "proxy/grpc_h2.h"

#include "common/grpc_util.h"

#include <google/protobuf/stubs/strutil.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>

namespace owrap {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// What gRPC's client makes of an HTTP status that is not 200.
grpc::StatusCode code_of_http_status(std::string_view status) {
  if (status == "400") return grpc::StatusCode::INTERNAL;
  if (status == "401") return grpc::StatusCode::UNAUTHENTICATED;
  if (status == "403") return grpc::StatusCode::PERMISSION_DENIED;
  if (status == "404") return grpc::StatusCode::UNIMPLEMENTED;
  if (status == "429" || status == "502" || status == "503" || status == "504") return grpc::StatusCode::UNAVAILABLE;
  return grpc::StatusCode::UNKNOWN;
}

// What gRPC's client makes of RST_STREAM without a status.
grpc::StatusCode code_of_reset(uint32_t error_code) {
  switch (error_code) {
    case NGHTTP2_CANCEL:
      return grpc::StatusCode::CANCELLED;
    case NGHTTP2_REFUSED_STREAM:
      return grpc::StatusCode::UNAVAILABLE;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
      return grpc::StatusCode::PERMISSION_DENIED;
    default:
      return grpc::StatusCode::INTERNAL;
  }
}

}  // namespace

std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) return std::nullopt;
  int64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  int64_t unit_ns = 0;
  switch (v.back()) {
    case 'H':
      unit_ns = 3600'000'000'000;
      break;
    case 'M':
      unit_ns = 60'000'000'000;
      break;
    case 'S':
      unit_ns = 1'000'000'000;
      break;
    case 'm':
      unit_ns = 1'000'000;
      break;
    case 'u':
      unit_ns = 1'000;
      break;
    case 'n':
      unit_ns = 1;
      break;
    default:
      return std::nullopt;
  }
  // 99999999H is 3.6e20 ns, past int64: it wrapped to a deadline already
  // passed. gRPC saturates such a timeout (tonic sends 99999999H for a
  // Duration too large to write); so does this, far enough below the
  // clock's limit that now() + timeout cannot overflow either.
  if (n > kMaxGrpcTimeout.count() / unit_ns) return kMaxGrpcTimeout;
  return std::chrono::nanoseconds(n * unit_ns);
}

std::string format_grpc_timeout(std::chrono::nanoseconds left) {
  int64_t us = std::max<int64_t>(std::chrono::duration_cast<std::chrono::microseconds>(left).count(), 1);
  if (us < 100000000) return std::to_string(us) + "u";
  int64_t ms = us / 1000;
  if (ms < 100000000) return std::to_string(ms) + "m";
  return std::to_string(std::min<int64_t>(ms / 1000, 99999999)) + "S";
}

int hops_of(const H2Headers& headers) {
  std::string_view v = find_header(headers, kHopsMetadata);
  int hops = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return 0;
    hops = std::min(hops * 10 + (c - '0'), 1000000);
  }
  return hops;
}

std::string percent_encode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e || c == '%') {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

namespace {
uint32_t message_length(std::string_view body) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(body[1])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(body[2])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(body[3])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(body[4]));
}
}  // namespace

std::optional<std::string_view> single_message(std::string_view body) {
  if (body.size() < 5 || body[0] != 0) return std::nullopt;
  if (body.size() - 5 != message_length(body)) return std::nullopt;
  return body.substr(5);
}

std::optional<std::string_view> first_message(std::string_view body) {
  if (body.size() < 5 || (body[0] != 0 && body[0] != 1)) return std::nullopt;
  const uint32_t len = message_length(body);
  if (body.size() - 5 < len) return std::nullopt;
  return body.substr(5, len);
}

std::string framed_message(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 5);
  const auto n = static_cast<uint32_t>(payload.size());
  out.push_back(0);
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.append(payload);
  return out;
}

std::string encode_binary_header(std::string_view bytes) {
  std::string out;
  google::protobuf::Base64Escape(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()),
                                 &out, false);
  return out;
}

std::string decode_binary_header(std::string_view text) {
  std::string out;
  if (!google::protobuf::Base64Unescape(google::protobuf::StringPiece(text.data(), text.size()), &out)) return {};
  return out;
}

H2Headers grpc_response_headers() {
  return {{":status", "200"}, {"content-type", "application/grpc"}};
}

void add_grpc_status(const grpc::Status& s, H2Headers& block) {
  block.push_back({"grpc-status", std::to_string(static_cast<int>(s.error_code()))});
  block.push_back({"grpc-message", percent_encode(s.error_message())});
  if (!s.error_details().empty()) block.push_back({"grpc-status-details-bin", encode_binary_header(s.error_details())});
}

void H2Answer::add_headers(H2Headers&& h, bool end_stream) {
  if (!got_headers) {
    got_headers = true;
    if (!end_stream) {
      headers = std::move(h);
      return;
    }
  }
  trailers = std::move(h);
}

bool H2Answer::has_grpc_status() const {
  return !find_header(trailers, "grpc-status").empty();
}

bool H2Answer::has_http_error() const {
  std::string_view http = find_header(trailers.empty() ? headers : trailers, ":status");
  return !http.empty() && http != "200";
}

grpc::Status H2Answer::status(uint32_t close_code) const {
  std::string_view code = find_header(trailers, "grpc-status");
  if (code.empty()) {
    std::string_view http = find_header(trailers.empty() ? headers : trailers, ":status");
    if (!http.empty() && http != "200") {
      return grpc::Status(code_of_http_status(http), "Received http2 header with status: " + std::string(http));
    }
    if (close_code == kConnectionLost) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the connection was lost");
    if (close_code != 0) {
      return grpc::Status(code_of_reset(close_code),
                          "Received RST_STREAM with error code " + std::to_string(close_code));
    }
    return grpc::Status(grpc::StatusCode::UNKNOWN, "the answer carried no grpc-status");
  }
  int n = 0;
  for (char c : code) n = (c >= '0' && c <= '9' && n < 1000) ? n * 10 + (c - '0') : 1000;
  if (n > 16) return grpc::Status(grpc::StatusCode::UNKNOWN, percent_decode(find_header(trailers, "grpc-message")));
  auto sc = static_cast<grpc::StatusCode>(n);
  if (sc == grpc::StatusCode::OK) return grpc::Status::OK;
  return grpc::Status(sc, percent_decode(find_header(trailers, "grpc-message")),
                      decode_binary_header(find_header(trailers, "grpc-status-details-bin")));
}

}  // namespace owrap
