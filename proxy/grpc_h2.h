// gRPC's HTTP/2 protocol, the parts the frame relay reads and writes
// itself: grpc-timeout, grpc-message's percent encoding, message framing,
// and an answer's status as gRPC's client would report it.
#pragma once

#include "proxy/h2_connection.h"

#include <grpcpp/support/status.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace owrap {

// The largest message either side may send, as the gRPC server and the
// delegate channel allow.
inline constexpr size_t kMaxGrpcMessage = 64 * 1024 * 1024;

// grpc-timeout: up to 8 digits and a unit (H M S m u n); a longer time
// than kMaxGrpcTimeout (about 100 years) is that.
inline constexpr std::chrono::nanoseconds kMaxGrpcTimeout = std::chrono::hours(24 * 365 * 100);
std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view value);
std::string format_grpc_timeout(std::chrono::nanoseconds left);

// The openshell-wrapper-hops count in request headers (0 when absent or not
// a number), as wrapper_hops reads it from gRPC metadata.
int hops_of(const H2Headers& headers);

std::string percent_encode(std::string_view s);
std::string percent_decode(std::string_view s);

// The response headers gRPC's server starts every answer with.
H2Headers grpc_response_headers();
// grpc-status, grpc-message (percent-encoded) and, when `s` has details,
// grpc-status-details-bin: the status as trailers (or a trailers-only
// block) carry it.
void add_grpc_status(const grpc::Status& s, H2Headers& block);

// A -bin header's value (base64, unpadded as gRPC writes it) and back;
// undecodable text is empty.
std::string encode_binary_header(std::string_view bytes);
std::string decode_binary_header(std::string_view text);

// The payload of a body holding exactly one uncompressed message.
std::optional<std::string_view> single_message(std::string_view body);
// What gRPC's server takes as a unary call's request when no compression
// was announced: the first message, whole; bytes after it are never read,
// and the compressed flag means nothing without an encoding. Nothing when
// the body ends before a message does ("Unable to parse request").
std::optional<std::string_view> first_message(std::string_view body);
// `payload` with its 5-byte length prefix.
std::string framed_message(std::string_view payload);

// What came back on a stream, and the status gRPC's client makes of it
// (the delegate's own status is never rewritten here).
struct H2Answer {
  H2Headers headers;   // the response headers (empty for a trailers-only answer)
  H2Headers trailers;  // the trailers, or the trailers-only block
  std::string body;
  bool got_headers = false;
  void add_headers(H2Headers&& h, bool end_stream);
  // `close_code`: the stream's HTTP/2 error code (kConnectionLost when the
  // connection went: UNAVAILABLE with `lost()`, made only then). A status
  // carried in the trailers wins.
  template <class LostMessage>
  grpc::Status status(uint32_t close_code, LostMessage&& lost) const {
    if (close_code == kConnectionLost && !has_grpc_status() && !has_http_error()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, lost());
    }
    return status(close_code);
  }
  grpc::Status status(uint32_t close_code) const;
  // True when the status came from the peer's own grpc-status.
  bool has_grpc_status() const;
  // True for an HTTP status other than 200 (and no grpc-status).
  bool has_http_error() const;
};

}  // namespace owrap
