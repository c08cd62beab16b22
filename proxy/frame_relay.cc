#include "proxy/frame_relay.h"

#include "common/log.h"
#include "proxy/frame_call.h"
#include "proxy/grpc_h2.h"
#include "proxy/h2_connection.h"

#include <grpcpp/server_posix.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <boost/asio/post.hpp>

#include <cerrno>
#include <cstring>
#include <future>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace owrap {

class GatewayConnection;

// The relay's state, on its thread.
struct FrameRelay::State {
  State(boost::asio::io_context& io, const FrameRelayOptions& options) : shared(io, options) {}
  RelayShared shared;
  std::unordered_map<std::string_view, Rpc> unary_paths;
  std::unordered_set<std::shared_ptr<GatewayConnection>> connections;
  std::vector<UniqueFd> waiting;  // adopted before the server was known
};

// Owns the streams of one gateway connection.
class GatewayConnection final : public H2StreamAcceptor,
                                public CallOwner,
                                public std::enable_shared_from_this<GatewayConnection> {
 public:
  explicit GatewayConnection(FrameRelay::State& state) : state_(state), shared_(state.shared) {}
  void start(UniqueFd fd) {
    conn_ =
        H2Connection::make(shared_.io, std::move(fd), H2Connection::Side::kServer, shared_.flusher, this, "gateway");
    conn_->start();
  }
  H2StreamSink* accept_stream(int32_t stream, const H2Headers& headers) override;
  void on_connection_closed() override {
    if (internal_) internal_->close();
    internal_.reset();
    boost::asio::post(shared_.io, [self = shared_from_this()] { self->state_.connections.erase(self); });
  }
  void close() {
    if (conn_) conn_->close();
  }
  H2Connection& gateway() override { return *conn_; }
  void retire(int32_t stream) override {
    boost::asio::post(shared_.io, [self = shared_from_this(), stream] { self->calls_.erase(stream); });
  }

 private:
  // The socket pair to the wrapper's own gRPC server, one per gateway
  // connection (so the server sees the gateway's connections as they are).
  std::shared_ptr<H2Connection> internal_connection();

  FrameRelay::State& state_;
  RelayShared& shared_;
  std::shared_ptr<H2Connection> conn_;
  std::shared_ptr<H2Connection> internal_;
  std::unordered_map<int32_t, std::unique_ptr<H2StreamSink>> calls_;
};

namespace {

// Any other stream, relayed frame for frame to the wrapper's gRPC server.
class PipedCall final : public H2StreamSink {
 public:
  PipedCall(CallOwner& owner, int32_t stream) : owner_(owner), stream_(stream) {}
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
    if (code == 0 && responded_) return;
    // A stream reset from this side tells its sink nothing more: the call
    // retires itself.
    gateway_closed_ = true;
    owner_.gateway().reset(stream_, code != 0 && code != kConnectionLost ? code : uint32_t{NGHTTP2_INTERNAL_ERROR});
    owner_.retire(stream_);
  }
  void upstream_taken(size_t n) { owner_.gateway().consume(stream_, n); }
  void upstream_headers_too_large() {}  // the reset that follows resets the caller's stream

 private:
  void finish_request() {
    up_.finished = true;
    if (internal_) internal_->body_grew(internal_stream_);
  }

  CallOwner& owner_;
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

// A stream answered at once, before any relay: what gRPC's server answers a
// request whose headers it refuses.
class RefusedCall final : public H2StreamSink {
 public:
  RefusedCall(CallOwner& owner, int32_t stream, grpc::Status status)
      : owner_(owner), stream_(stream), status_(std::move(status)) {}
  void on_headers(H2Headers&&, bool) override {
    if (answered_) return;
    answered_ = true;
    H2Headers h = grpc_response_headers();
    add_grpc_status(status_, h);
    owner_.gateway().submit_response(stream_, h, nullptr);
  }
  void on_data(const uint8_t*, size_t len) override { owner_.gateway().consume(stream_, len); }
  void on_end_stream() override {}
  void on_close(uint32_t) override { owner_.retire(stream_); }

 private:
  CallOwner& owner_;
  const int32_t stream_;
  const grpc::Status status_;
  bool answered_ = false;
};

// gRPC's server refuses a request whose header list (RFC 7541 sizes: name,
// value and 32 for each, pseudo-headers included) passes 8 KiB, and drops
// the whole connection a little further on: a delegate that is a gRPC
// server would do that to the delegate connection every call shares.
constexpr size_t kMaxRequestMetadata = 8 * 1024;

size_t header_list_size(const H2Headers& headers) {
  size_t n = 0;
  for (const H2Header& h : headers) n += h.name.size() + h.value.size() + 32;
  return n;
}

}  // namespace

std::shared_ptr<H2Connection> GatewayConnection::internal_connection() {
  if (keep_if_usable(internal_)) return internal_;
  if (shared_.server == nullptr || shared_.stopping) return nullptr;
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
  auto unary = state_.unary_paths.find(find_header(headers, ":path"));
  // A compressed request goes to gRPC's server, which decompresses it.
  std::string_view encoding = find_header(headers, "grpc-encoding");
  const bool uncompressed = encoding.empty() || encoding == "identity";
  std::unique_ptr<H2StreamSink> call;
  if (header_list_size(headers) > kMaxRequestMetadata) {
    call = std::make_unique<RefusedCall>(
        *this, stream,
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "received initial metadata size exceeds limit"));
  } else if (find_header(headers, "te").empty()) {
    // gRPC's server answers so (nghttp2 already resets a te other than
    // "trailers"); the delegate, a gRPC server too, would answer the same.
    call = std::make_unique<RefusedCall>(*this, stream, grpc::Status(grpc::StatusCode::UNKNOWN, "Missing :te header"));
  } else if (unary != state_.unary_paths.end() && uncompressed && find_header(headers, ":method") == "POST") {
    call = make_frame_call(*this, shared_, stream, unary->second, headers);
  } else {
    auto piped = std::make_unique<PipedCall>(*this, stream);
    if (!piped->start(headers, internal_connection())) return nullptr;  // refused
    call = std::move(piped);
  }
  H2StreamSink* sink = call.get();
  calls_[stream] = std::move(call);
  return sink;
}

FrameRelay::FrameRelay(FrameRelayOptions options)
    : options_(std::move(options)), state_(std::make_unique<State>(io_.io(), options_)) {
  for (const RpcInfo& info : all_rpcs()) {
    if (!info.server_streaming) state_->unary_paths.emplace(info.method_path, info.rpc);
  }
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
    state_->shared.server = server;
    auto waiting = std::move(state_->waiting);
    state_->waiting.clear();
    for (UniqueFd& fd : waiting) start_connection(std::move(fd));
  });
}

void FrameRelay::start_connection(UniqueFd fd) {
  if (state_->shared.stopping) return;
  if (state_->shared.server == nullptr) {
    state_->waiting.push_back(std::move(fd));
    return;
  }
  auto c = std::make_shared<GatewayConnection>(*state_);
  state_->connections.insert(c);
  c->start(std::move(fd));
  state_->shared.flusher.flush();
}

void FrameRelay::stop() {
  if (stopped_) return;
  stopped_ = true;
  std::promise<void> closed;
  boost::asio::post(io_.io(), [this, &closed] {
    state_->shared.stopping = true;
    auto all = state_->connections;
    for (auto& c : all) c->close();
    if (state_->shared.delegate) state_->shared.delegate->close();
    state_->shared.flusher.flush();
    closed.set_value();
  });
  closed.get_future().wait();
  // What the close set going (calls answering the runner's cancellation,
  // their retirement, GOAWAY frames) runs on for a moment.
  for (int i = 0; i < 100; i++) {
    std::promise<bool> idle;
    boost::asio::post(io_.io(), [this, &idle] { idle.set_value(state_->connections.empty()); });
    if (idle.get_future().get()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  io_.stop();
  // The loop's thread is gone: handlers already due (retirements, resumes)
  // run here, on this thread; then what is left goes, and the handlers that
  // sets off (timers cancelled, resumes of calls now gone, which check) run
  // too, so nothing of the relay outlives it in the loop's queue.
  auto drain = [this] {
    io_.io().restart();
    for (int i = 0; i < 100 && io_.io().poll() > 0; i++) {
    }
  };
  drain();
  state_->connections.clear();
  state_->shared.delegate.reset();
  drain();
}

}  // namespace owrap
