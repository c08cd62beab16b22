#include "proxy/frame_relay.h"

#include "common/grpc_util.h"
#include "common/log.h"
#include "common/secrets.h"
#include "delegates/delegate.h"
#include "proxy/completion_queues.h"
#include "proxy/h2_connection.h"
#include "proxy/pipeline.h"
#include "proxy/unary_call.h"
#include "proxy/wire_check.h"

#include <grpcpp/server_posix.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cerrno>
#include <cstring>
#include <future>
#include <unordered_map>

namespace owrap {

namespace {

// The same limit the gRPC server and the delegate channel apply.
constexpr size_t kMaxMessage = 64 * 1024 * 1024;

// How a direct call checks its request and reply, by RPC.
struct DirectMethod {
  Rpc rpc{};
  bool (*parse_request)(std::string_view payload, Rpc rpc, std::string* sandbox_id) = nullptr;
  const WireCheck* reply_check = nullptr;
  std::string request_type;
  std::string response_type;
};

template <class Req>
bool parse_request(std::string_view payload, Rpc rpc, std::string* sandbox_id) {
  Req request;
  if (!request.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return false;
  *sandbox_id = sandbox_id_of(rpc, request);
  return true;
}

std::array<DirectMethod, kRpcCount> make_direct_methods() {
  std::array<DirectMethod, kRpcCount> out{};
#define OWRAP_DIRECT_METHOD(Name, Req, Resp, Streaming, Ref)                                      \
  out[static_cast<size_t>(Rpc::k##Name)] =                                                        \
      DirectMethod{Rpc::k##Name, &parse_request<v1::Req>, new WireCheck(*v1::Resp::descriptor()), \
                   v1::Req::descriptor()->full_name(), v1::Resp::descriptor()->full_name()};
  OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_DIRECT_METHOD)
#undef OWRAP_DIRECT_METHOD
  return out;
}

const std::array<DirectMethod, kRpcCount>& direct_methods() {
  static const auto methods = make_direct_methods();
  return methods;
}

bool request_may_hold_secrets(Rpc rpc) {
  switch (rpc) {
#define OWRAP_SECRET_CHECK(Name, Req, Resp, Streaming, Ref) \
  case Rpc::k##Name:                                        \
    return may_hold_secrets(*v1::Req::descriptor());
    OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_SECRET_CHECK)
#undef OWRAP_SECRET_CHECK
  }
  return true;
}

// grpc-timeout: up to 8 digits and a unit (gRPC's HTTP/2 protocol).
std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) return std::nullopt;
  int64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  switch (v.back()) {
    case 'H':
      return std::chrono::hours(n);
    case 'M':
      return std::chrono::minutes(n);
    case 'S':
      return std::chrono::seconds(n);
    case 'm':
      return std::chrono::milliseconds(n);
    case 'u':
      return std::chrono::microseconds(n);
    case 'n':
      return std::chrono::nanoseconds(n);
    default:
      return std::nullopt;
  }
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

// gRPC's grpc-message encoding: bytes outside printable ASCII, and '%'.
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

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
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

// What gRPC's client makes of an HTTP status that is not 200.
grpc::StatusCode code_of_http_status(int status) {
  switch (status) {
    case 400:
      return grpc::StatusCode::INTERNAL;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 403:
      return grpc::StatusCode::PERMISSION_DENIED;
    case 404:
      return grpc::StatusCode::UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return grpc::StatusCode::UNAVAILABLE;
    default:
      return grpc::StatusCode::UNKNOWN;
  }
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

// A gRPC message framing: one uncompressed message, its payload.
std::optional<std::string_view> single_message(std::string_view body) {
  if (body.size() < 5 || body[0] != 0) return std::nullopt;
  uint32_t len = (static_cast<uint32_t>(static_cast<uint8_t>(body[1])) << 24) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(body[2])) << 16) |
                 (static_cast<uint32_t>(static_cast<uint8_t>(body[3])) << 8) |
                 static_cast<uint32_t>(static_cast<uint8_t>(body[4]));
  if (body.size() - 5 != len) return std::nullopt;
  return body.substr(5);
}

UniqueFd connect_unix(const std::string& path, std::string* error) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    *error = std::string("socket: ") + std::strerror(errno);
    return {};
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    *error = "no socket path";
    return {};
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  // A Unix socket connects at once or not at all (EAGAIN: its backlog is full).
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = "connect " + path + ": " + std::strerror(errno);
    return {};
  }
  return fd;
}

}  // namespace

// What every call object of the relay reaches, on the relay's thread.
struct FrameRelay::Shared {
  Shared(boost::asio::io_context& io, FrameRelayOptions& options) : io(io), options(options) {}
  boost::asio::io_context& io;
  FrameRelayOptions& options;
  H2Flusher flusher;
  grpc::Server* server = nullptr;
  std::unordered_map<std::string_view, Rpc> direct_paths;
  std::unordered_set<std::shared_ptr<GatewayConnection>> connections;
  std::shared_ptr<H2Connection> delegate;
  std::vector<UniqueFd> waiting;  // adopted before the server was known
  bool stopping = false;

  // The connection to the delegate's socket, made on first use and again
  // after it is lost or the delegate said GOAWAY.
  std::shared_ptr<H2Connection> delegate_connection(std::string* error) {
    if (delegate && delegate->accepts_streams()) return delegate;
    if (delegate && delegate->open_streams() == 0) delegate->close();
    delegate.reset();
    UniqueFd fd = connect_unix(options.delegate.socket_path(), error);
    if (!fd) return nullptr;
    delegate = H2Connection::make(io, std::move(fd), H2Connection::Side::kClient, flusher, nullptr,
                                  "delegate " + options.delegate.name());
    delegate->start();
    return delegate;
  }
};

// Owns the streams of one gateway connection.
class GatewayConnection final : public H2StreamAcceptor, public std::enable_shared_from_this<GatewayConnection> {
 public:
  explicit GatewayConnection(FrameRelay::Shared& shared) : shared_(shared) {}
  void start(UniqueFd fd) {
    conn_ =
        H2Connection::make(shared_.io, std::move(fd), H2Connection::Side::kServer, shared_.flusher, this, "gateway");
    conn_->start();
  }
  H2StreamSink* accept_stream(int32_t stream, const H2Headers& headers) override;
  void on_connection_closed() override {
    if (internal_) internal_->close();
    internal_.reset();
    boost::asio::post(shared_.io, [self = shared_from_this()] { self->shared_.connections.erase(self); });
  }
  void close() {
    if (conn_) conn_->close();
  }
  // A call whose gateway stream closed: deleted once the event at hand is
  // handled (it may be on the stack).
  void retire(int32_t stream) {
    boost::asio::post(shared_.io, [self = shared_from_this(), stream] { self->calls_.erase(stream); });
  }
  H2Connection& gateway() { return *conn_; }
  // The socket pair to the wrapper's own gRPC server, one per gateway
  // connection (so the server sees the gateway's connections as they are).
  std::shared_ptr<H2Connection> internal_connection();
  FrameRelay::Shared& shared() { return shared_; }

 private:
  FrameRelay::Shared& shared_;
  std::shared_ptr<H2Connection> conn_;
  std::shared_ptr<H2Connection> internal_;
  std::unordered_map<int32_t, std::unique_ptr<H2StreamSink>> calls_;
};

namespace {

// The other end of a relayed stream, for a call object that is the sink on
// both connections.
template <class Call>
struct UpstreamSink final : H2StreamSink {
  explicit UpstreamSink(Call& c) : call(c) {}
  void on_headers(H2Headers&& h, bool end) override { call.upstream_headers(std::move(h), end); }
  void on_data(const uint8_t* d, size_t n) override { call.upstream_data(d, n); }
  void on_end_stream() override { call.upstream_end(); }
  void on_close(uint32_t code) override { call.upstream_closed(code); }
  void on_body_taken(size_t n) override { call.upstream_taken(n); }
  Call& call;
};

// A unary call no stage sees, straight to the delegate's socket.
class DirectCall final : public H2StreamSink {
 public:
  DirectCall(GatewayConnection& owner, int32_t stream, const DirectMethod& method, const H2Headers& headers)
      : owner_(owner),
        shared_(owner.shared()),
        stream_(stream),
        method_(method),
        start_(std::chrono::steady_clock::now()),
        active_(shared_.options.tracker) {
    hops_ = hops_of(headers);
    if (auto t = parse_grpc_timeout(find_header(headers, "grpc-timeout"))) {
      deadline_ = start_ + *t;
      timer_.emplace(shared_.io);
      timer_->expires_at(*deadline_);
      timer_->async_wait([this](const boost::system::error_code& ec) {
        if (!ec) on_deadline();
      });
    }
    path_ = std::string(find_header(headers, ":path"));
    for (const H2Header& h : headers) {
      if (is_transport_metadata(h.name) || h.name == kHopsMetadata) continue;
      metadata_.push_back(h);
    }
  }
  ~DirectCall() override { release_delegate(NGHTTP2_CANCEL); }

  // The gateway's side.
  void on_headers(H2Headers&&, bool end) override {
    if (end) request_complete();  // trailers from the caller: its side ended
  }
  void on_data(const uint8_t* data, size_t len) override {
    owner_.gateway().consume(stream_, len);
    if (answered_) return;
    if (request_.size() + len > kMaxMessage + 5) {
      return answer(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "Received message larger than max (" + std::to_string(request_.size() + len - 5) +
                                     " vs. " + std::to_string(kMaxMessage) + ")"));
    }
    request_.append(reinterpret_cast<const char*>(data), len);
  }
  void on_end_stream() override { request_complete(); }
  void on_close(uint32_t code) override {
    gateway_closed_ = true;
    if (timer_) timer_->cancel();
    release_delegate(NGHTTP2_CANCEL);
    bool delivered = answered_ && code == 0;
    if (!answered_) answer_ = grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled the call");
    log_call({rpc_name(method_.rpc), sandbox_id_, false, delivered, nullptr}, start_, answer_);
    owner_.retire(stream_);
  }

  // The delegate's side.
  void upstream_headers(H2Headers&& h, bool end) {
    if (!got_headers_) {
      got_headers_ = true;
      if (end) {
        trailers_ = std::move(h);
      } else {
        headers_ = std::move(h);
      }
      return;
    }
    trailers_ = std::move(h);
  }
  void upstream_data(const uint8_t* data, size_t len) {
    if (delegate_) delegate_->consume(delegate_stream_, len);
    if (answered_) return;
    if (reply_.size() + len > kMaxMessage + 5) {
      // What gRPC's client says; the delegate stream is reset.
      return answer(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "delegate \"" + shared_.options.delegate.name() + "\" sent a " +
                                     std::string(rpc_name(method_.rpc)) + " reply larger than max (" +
                                     std::to_string(kMaxMessage) + " bytes)"));
    }
    reply_.append(reinterpret_cast<const char*>(data), len);
  }
  void upstream_end() {}
  void upstream_closed(uint32_t code) {
    delegate_stream_ = 0;
    delegate_.reset();
    if (answered_) return;
    answer(delegate_status(code));
  }
  void upstream_taken(size_t) {}

 private:
  void request_complete() {
    if (request_done_ || answered_) return;
    request_done_ = true;
    std::optional<std::string_view> payload = single_message(request_);
    if (!payload || !method_.parse_request(*payload, method_.rpc, &sandbox_id_)) {
      return answer(
          grpc::Status(grpc::StatusCode::INTERNAL,
                       std::string(rpc_name(method_.rpc)) + ": the request does not parse as " + method_.request_type));
    }
    if (grpc::Status s = admit(); !s.ok()) return answer(s);
    Delegate& d = shared_.options.delegate;
    if (!d.available()) return answer(unavailable_delegate_status(d));
    std::string error;
    delegate_ = shared_.delegate_connection(&error);
    if (!delegate_) {
      return answer(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 unavailable_message(d, "failed to connect to all addresses: " + error)));
    }
    send_to_delegate();
  }

  grpc::Status admit() const {
    const std::string& name = shared_.options.wrapper_name;
    if (hops_ >= kMaxWrapperHops) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "wrapper \"" + name + "\" refuses a call that has already passed " +
                              (hops_ >= 1000000 ? std::string("at least 1000000") : std::to_string(hops_)) +
                              " wrappers (limit " + std::to_string(kMaxWrapperHops) +
                              "): the wrappers form a loop; check each wrapper's delegate.endpoint");
    }
    if (shared_.options.tracker.draining()) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "wrapper \"" + name + "\" is shutting down");
    }
    return grpc::Status::OK;
  }

  void send_to_delegate() {
    H2Headers h;
    h.reserve(metadata_.size() + 9);
    h.push_back({":method", "POST"});
    h.push_back({":scheme", "http"});
    h.push_back({":path", path_});
    h.push_back({":authority", "localhost"});
    h.push_back({"te", "trailers"});
    h.push_back({"content-type", "application/grpc"});
    h.push_back({"user-agent", "openshell-driver-wrapper/" OWRAP_VERSION});
    if (deadline_) h.push_back({"grpc-timeout", format_grpc_timeout(*deadline_ - std::chrono::steady_clock::now())});
    for (H2Header& m : metadata_) h.push_back(std::move(m));
    h.push_back({std::string(kHopsMetadata), std::to_string(hops_ + 1)});
    request_body_.bytes = std::move(request_);
    request_body_.finished = true;
    delegate_stream_ = delegate_->submit_request(h, &request_body_, &upstream_);
    if (delegate_stream_ <= 0) {
      delegate_stream_ = 0;
      delegate_.reset();
      answer(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          unavailable_message(shared_.options.delegate, "the connection takes no new calls")));
    }
  }

  // The delegate's answer as gRPC's client would report it, then the
  // wrapper's own checks (a reply that does not parse, a transport failure
  // named after the delegate).
  grpc::Status delegate_status(uint32_t code) {
    const Delegate& d = shared_.options.delegate;
    std::string_view status = find_header(trailers_, "grpc-status");
    if (status.empty()) {
      std::string_view http = find_header(trailers_.empty() ? headers_ : trailers_, ":status");
      if (!http.empty() && http != "200") {
        int n = std::atoi(std::string(http).c_str());
        return grpc::Status(code_of_http_status(n), "Received http2 header with status: " + std::string(http));
      }
      if (code == kConnectionLost) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, unavailable_message(d, "the connection was lost"));
      }
      if (code != 0) {
        return grpc::Status(code_of_reset(code), "Received RST_STREAM with error code " + std::to_string(code));
      }
      return grpc::Status(grpc::StatusCode::UNKNOWN, "the delegate's answer carried no grpc-status");
    }
    int n = 0;
    for (char c : status) n = (c >= '0' && c <= '9') ? n * 10 + (c - '0') : 1000;
    auto sc = static_cast<grpc::StatusCode>(n > 16 ? grpc::StatusCode::UNKNOWN : n);
    if (sc != grpc::StatusCode::OK) {
      details_ = std::string(find_header(trailers_, "grpc-status-details-bin"));
      return grpc::Status(sc, percent_decode(find_header(trailers_, "grpc-message")));
    }
    std::optional<std::string_view> payload = single_message(reply_);
    if (!payload || !method_.reply_check->parses(*payload)) {
      return unparsable_reply_status(d, rpc_name(method_.rpc), method_.response_type);
    }
    return grpc::Status::OK;
  }

  void answer(const grpc::Status& s) {
    if (answered_) return;
    answered_ = true;
    answer_ = s;
    if (timer_) timer_->cancel();
    release_delegate(NGHTTP2_CANCEL);
    if (gateway_closed_) return;
    H2Headers h;
    h.push_back({":status", "200"});
    h.push_back({"content-type", "application/grpc"});
    add_metadata(headers_, h);
    if (s.ok()) {
      H2Headers trailers;
      trailers.push_back({"grpc-status", "0"});
      add_metadata(trailers_, trailers);
      reply_body_.bytes = std::move(reply_);
      reply_body_.finished = true;
      reply_body_.trailers = std::move(trailers);
      owner_.gateway().submit_response(stream_, h, &reply_body_);
      return;
    }
    h.push_back({"grpc-status", std::to_string(static_cast<int>(s.error_code()))});
    h.push_back({"grpc-message", percent_encode(s.error_message())});
    if (!details_.empty()) h.push_back({"grpc-status-details-bin", details_});
    add_metadata(trailers_, h);
    owner_.gateway().submit_response(stream_, h, nullptr);
  }

  static void add_metadata(const H2Headers& from, H2Headers& to) {
    for (const H2Header& m : from) {
      if (!is_transport_metadata(m.name)) to.push_back(m);
    }
  }

  void on_deadline() {
    if (answered_ || gateway_closed_) return;
    answer(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the caller's deadline passed"));
    shared_.flusher.flush();
  }

  void release_delegate(uint32_t code) {
    if (delegate_ && delegate_stream_ > 0) delegate_->reset(delegate_stream_, code);
    delegate_stream_ = 0;
    delegate_.reset();
  }

  GatewayConnection& owner_;
  FrameRelay::Shared& shared_;
  const int32_t stream_;
  const DirectMethod& method_;
  const std::chrono::steady_clock::time_point start_;
  CallTracker::Active active_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::optional<boost::asio::steady_timer> timer_;
  std::string path_;
  H2Headers metadata_;
  int hops_ = 0;
  std::string request_;
  std::string sandbox_id_;
  std::shared_ptr<H2Connection> delegate_;
  int32_t delegate_stream_ = 0;
  UpstreamSink<DirectCall> upstream_{*this};
  H2Headers headers_;
  H2Headers trailers_;
  std::string reply_;
  std::string details_;
  H2Body request_body_;  // toward the delegate
  H2Body reply_body_;    // toward the caller
  grpc::Status answer_;
  bool got_headers_ = false;
  bool request_done_ = false;
  bool answered_ = false;
  bool gateway_closed_ = false;
};

// Any other stream, relayed frame for frame to the wrapper's gRPC server.
class PipedCall final : public H2StreamSink {
 public:
  PipedCall(GatewayConnection& owner, int32_t stream) : owner_(owner), stream_(stream) {}
  ~PipedCall() override {
    if (internal_ && internal_stream_ > 0) internal_->reset(internal_stream_, NGHTTP2_CANCEL);
  }
  // The request headers; false when the server cannot be reached.
  bool start(const H2Headers& headers, std::shared_ptr<H2Connection> internal) {
    internal_ = std::move(internal);
    if (!internal_) return false;
    internal_stream_ = internal_->submit_request(headers, &up_, &upstream_);
    if (internal_stream_ <= 0) {
      internal_stream_ = 0;
      internal_.reset();
      return false;
    }
    return true;
  }

  // The gateway's side.
  void on_headers(H2Headers&& h, bool end) override {
    if (!started_) {  // the request headers, already sent in start()
      started_ = true;
      if (end) finish_request();
      return;
    }
    up_.trailers = std::move(h);
    finish_request();
  }
  void on_data(const uint8_t* data, size_t len) override {
    up_.bytes.append(reinterpret_cast<const char*>(data), len);
    if (internal_) internal_->body_grew(internal_stream_);
  }
  void on_end_stream() override { finish_request(); }
  void on_close(uint32_t code) override {
    gateway_closed_ = true;
    if (internal_ && internal_stream_ > 0) {
      internal_->reset(internal_stream_, code == 0 || code == kConnectionLost ? uint32_t{NGHTTP2_CANCEL} : code);
    }
    internal_stream_ = 0;
    internal_.reset();
    owner_.retire(stream_);
  }
  void on_body_taken(size_t n) override {
    if (internal_) internal_->consume(internal_stream_, n);
  }

  // The server's side.
  void upstream_headers(H2Headers&& h, bool end) {
    if (gateway_closed_) return;
    if (!responded_) {
      responded_ = true;
      owner_.gateway().submit_response(stream_, h, end ? nullptr : &down_);
      return;
    }
    down_.trailers = std::move(h);
    down_.finished = true;
    owner_.gateway().body_grew(stream_);
  }
  void upstream_data(const uint8_t* data, size_t len) {
    if (gateway_closed_) return;
    down_.bytes.append(reinterpret_cast<const char*>(data), len);
    owner_.gateway().body_grew(stream_);
  }
  void upstream_end() {
    if (gateway_closed_) return;
    down_.finished = true;
    owner_.gateway().body_grew(stream_);
  }
  void upstream_closed(uint32_t code) {
    internal_stream_ = 0;
    internal_.reset();
    if (gateway_closed_) return;
    if (code != 0) {
      owner_.gateway().reset(stream_, code == kConnectionLost ? uint32_t{NGHTTP2_INTERNAL_ERROR} : code);
    } else if (!responded_) {
      owner_.gateway().reset(stream_, NGHTTP2_INTERNAL_ERROR);
    }
  }
  void upstream_taken(size_t n) { owner_.gateway().consume(stream_, n); }

 private:
  void finish_request() {
    up_.finished = true;
    if (internal_) internal_->body_grew(internal_stream_);
  }

  GatewayConnection& owner_;
  const int32_t stream_;
  std::shared_ptr<H2Connection> internal_;
  int32_t internal_stream_ = 0;
  UpstreamSink<PipedCall> upstream_{*this};
  H2Body up_;    // the caller's request, toward the server
  H2Body down_;  // the server's answer, toward the caller
  bool started_ = false;
  bool responded_ = false;
  bool gateway_closed_ = false;
};

}  // namespace

std::shared_ptr<H2Connection> GatewayConnection::internal_connection() {
  if (internal_ && internal_->accepts_streams()) return internal_;
  if (internal_ && internal_->open_streams() == 0) internal_->close();
  internal_.reset();
  if (shared_.server == nullptr) return nullptr;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    log_warn("cannot make a socket pair for the gRPC server", {{"error", std::strerror(errno)}});
    return nullptr;
  }
  // gRPC takes its end non-blocking (set above), or the connection hangs.
  grpc::AddInsecureChannelFromFd(shared_.server, fds[1]);
  internal_ = H2Connection::make(shared_.io, UniqueFd(fds[0]), H2Connection::Side::kClient, shared_.flusher, nullptr,
                                 "wrapper's gRPC server");
  internal_->start();
  return internal_;
}

H2StreamSink* GatewayConnection::accept_stream(int32_t stream, const H2Headers& headers) {
  std::string_view path = find_header(headers, ":path");
  std::string_view encoding = find_header(headers, "grpc-encoding");
  auto route = shared_.direct_paths.find(path);
  std::unique_ptr<H2StreamSink> call;
  if (route != shared_.direct_paths.end() && (encoding.empty() || encoding == "identity") &&
      find_header(headers, ":method") == "POST") {
    call = std::make_unique<DirectCall>(*this, stream, direct_methods()[static_cast<size_t>(route->second)], headers);
  } else {
    auto piped = std::make_unique<PipedCall>(*this, stream);
    if (!piped->start(headers, internal_connection())) return nullptr;  // refused
    call = std::move(piped);
  }
  H2StreamSink* sink = call.get();
  calls_[stream] = std::move(call);
  return sink;
}

FrameRelay::FrameRelay(FrameRelayOptions options) : options_(std::move(options)) {
  shared_ = std::make_unique<Shared>(io_.io(), options_);
  for (const RpcInfo& info : all_rpcs()) {
    bool direct =
        !info.server_streaming && options_.pipeline.for_rpc(info.rpc).empty() && !request_may_hold_secrets(info.rpc);
    direct_[static_cast<size_t>(info.rpc)] = direct;
    if (direct) shared_->direct_paths.emplace(info.method_path, info.rpc);
  }
  direct_methods();  // built before the first call
}

FrameRelay::~FrameRelay() {
  stop();
}

void FrameRelay::adopt(UniqueFd fd) {
  int raw = fd.release();
  boost::asio::post(io_.io(), [this, raw] { start_connection(UniqueFd(raw)); });
}

void FrameRelay::set_server(grpc::Server* server) {
  boost::asio::post(io_.io(), [this, server] {
    shared_->server = server;
    auto waiting = std::move(shared_->waiting);
    shared_->waiting.clear();
    for (UniqueFd& fd : waiting) start_connection(std::move(fd));
  });
}

void FrameRelay::start_connection(UniqueFd fd) {
  if (shared_->stopping) return;
  if (shared_->server == nullptr) {
    shared_->waiting.push_back(std::move(fd));
    return;
  }
  auto c = std::make_shared<GatewayConnection>(*shared_);
  shared_->connections.insert(c);
  c->start(std::move(fd));
  shared_->flusher.flush();
}

size_t FrameRelay::connections() const {
  return shared_->connections.size();
}

void FrameRelay::stop() {
  if (stopped_) return;
  stopped_ = true;
  std::promise<void> closed;
  boost::asio::post(io_.io(), [this, &closed] {
    shared_->stopping = true;
    auto all = shared_->connections;
    for (auto& c : all) c->close();
    if (shared_->delegate) shared_->delegate->close();
    shared_->flusher.flush();
    closed.set_value();
  });
  closed.get_future().wait();
  io_.stop();
  shared_->connections.clear();
  shared_->delegate.reset();
}

}  // namespace owrap
