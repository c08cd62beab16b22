#include "proxy/frame_call.h"

#include "call/call_runner.h"
#include "common/grpc_util.h"
#include "common/secrets.h"
#include "delegates/delegate.h"
#include "proxy/completion_queues.h"
#include "proxy/grpc_h2.h"
#include "proxy/pipeline.h"
#include "proxy/unary_call.h"
#include "proxy/wire_check.h"

#include <nghttp2/nghttp2.h>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace owrap {

namespace {

// A call object is over 1 KiB: glibc serves such a request outside its
// fast bins and first merges every fast-bin chunk the last call freed
// (malloc_consolidate), 10-15 % of the relay's CPU under load. Calls are
// made and deleted on the relay's thread, so each type keeps a few freed
// blocks for the next call.
template <class T>
class RecycledBlocks {
 public:
  static void* take() {
    auto& blocks = free_blocks();
    if (blocks.empty()) return ::operator new(sizeof(T));
    void* p = blocks.back();
    blocks.pop_back();
    return p;
  }
  static void give_back(void* p) {
    auto& blocks = free_blocks();
    if (blocks.size() < kKept) return blocks.push_back(p);
    ::operator delete(p);
  }

 private:
  static constexpr size_t kKept = 64;
  struct FreeList {
    std::vector<void*> blocks;
    ~FreeList() {
      for (void* p : blocks) ::operator delete(p);
    }
  };
  static std::vector<void*>& free_blocks() {
    thread_local FreeList list;
    return list.blocks;
  }
};

template <class Req, class Resp>
class FrameCall final : public H2StreamSink, public CallHost {
 public:
  static void* operator new(size_t) { return RecycledBlocks<FrameCall>::take(); }
  static void operator delete(void* p) { RecycledBlocks<FrameCall>::give_back(p); }

  FrameCall(CallOwner& owner, RelayShared& shared, int32_t stream, Rpc rpc, const H2Headers& headers)
      : owner_(owner),
        shared_(shared),
        stream_(stream),
        start_(std::chrono::steady_clock::now()),
        active_(shared.options.tracker),
        raw_(shared.options.pipeline.for_rpc(rpc).empty()),
        runner_(*this, state_, shared.options.pipeline.for_rpc(rpc), request_, response_) {
    state_.rpc = rpc;
    if (shared.options.hook_queue) state_.cq = shared.options.hook_queue();
    state_.traceparent = std::string(find_header(headers, "traceparent"));
    hops_ = hops_of(headers);
    path_ = std::string(find_header(headers, ":path"));
    for (const H2Header& h : headers) {
      if (is_transport_metadata(h.name) || h.name == kHopsMetadata) continue;
      metadata_.push_back(h);
    }
    if (auto t = parse_grpc_timeout(find_header(headers, "grpc-timeout"))) {
      state_.deadline = start_ + *t;
      deadline_timer_.emplace(shared_.io);
      deadline_timer_->expires_at(state_.deadline);
      deadline_timer_->async_wait([this](const boost::system::error_code& ec) {
        if (!ec) after_event([this] { on_deadline(); });
      });
    }
  }
  ~FrameCall() override {
    reset_delegate();
    cancel_timer();
  }

  // The gateway's stream.
  void on_headers(H2Headers&&, bool end) override {
    if (end) request_complete();  // the request headers alone, or trailers: the caller's side ended
  }
  void on_data(const uint8_t* data, size_t len) override {
    owner_.gateway().consume(stream_, len);
    if (request_done_ || finished_) return;
    if (request_bytes_.size() + len > kMaxGrpcMessage + 5) {
      request_done_ = true;
      return finish(
          grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "Received message larger than max (" +
                                                                 std::to_string(request_bytes_.size() + len - 5) +
                                                                 " vs. " + std::to_string(kMaxGrpcMessage) + ")"));
    }
    request_bytes_.append(reinterpret_cast<const char*>(data), len);
    // gRPC's server starts a unary call on its first whole message, without
    // waiting for the caller to end its side.
    if (first_message(request_bytes_)) request_complete();
  }
  void on_end_stream() override { request_complete(); }
  void on_close(uint32_t code) override {
    gateway_closed_ = true;
    delivered_ = finished_ && code == 0;
    if (!finished_) cancel(caller_gone_status());
    if (finished_ && !logged_) log();
    maybe_retire();
  }

  // CallHost. Any thread. The runner keeps the call until this resume
  // ran, except when the relay stops and lets every call go: `alive_`.
  void post_resume() override {
    boost::asio::post(shared_.io, [this, alive = std::weak_ptr<void>(alive_)] {
      if (alive.expired()) return;
      after_event([this] { runner_.on_resumed(); });
    });
  }
  void arm_timer(std::chrono::steady_clock::time_point at) override {
    if (!stage_timer_) stage_timer_.emplace(shared_.io);
    const uint64_t generation = ++timer_generation_;
    stage_timer_->expires_at(at);
    stage_timer_->async_wait([this, generation](const boost::system::error_code& ec) {
      if (ec || generation != timer_generation_) return;
      after_event([this] { runner_.on_timer(); });
    });
  }
  void cancel_timer() override {
    ++timer_generation_;
    if (stage_timer_) stage_timer_->cancel();
  }
  void call_delegate() override {
    const Delegate& d = shared_.options.delegate;
    if (!d.available()) return runner_.on_delegate_done(unavailable_delegate_status(d), false);
    // As gRPC's client: a call whose deadline has passed is not sent.
    if (std::chrono::steady_clock::now() >= state_.deadline) {
      return runner_.on_delegate_done(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"), false);
    }
    std::string error;
    delegate_ = shared_.delegate_connection(&error);
    if (!delegate_) {
      return runner_.on_delegate_done(
          grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       unavailable_message(d, "failed to connect to all addresses: " + error)),
          false);
    }
    delegate_body_.bytes = raw_ ? std::move(request_bytes_) : framed_message(request_.SerializeAsString());
    delegate_body_.finished = true;
    delegate_stream_ = delegate_->submit_request(delegate_headers(), &delegate_body_, &delegate_sink_);
    if (delegate_stream_ <= 0) {
      delegate_stream_ = 0;
      delegate_.reset();
      return runner_.on_delegate_done(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, unavailable_message(d, "the connection takes no new calls")),
          false);
    }
  }
  void finish(const grpc::Status& status) override {
    grpc::Status s = status;
    if (!state_.secrets.empty() && !s.ok()) s = redact_status(s, state_.secrets);
    answer_ = s;
    finished_ = true;
    if (deadline_timer_) deadline_timer_->cancel();
    reset_delegate();
    if (gateway_closed_) return log();
    H2Headers h = grpc_response_headers();
    add_metadata(reply_.headers, h);
    const bool initial_metadata = h.size() > 2;
    if (s.ok()) {
      H2Headers trailers{{"grpc-status", "0"}};
      add_metadata(reply_.trailers, trailers);
      reply_body_.bytes = raw_ ? std::move(reply_.body) : framed_message(response_.SerializeAsString());
      reply_body_.finished = true;
      reply_body_.trailers = std::move(trailers);
      owner_.gateway().submit_response(stream_, h, &reply_body_);
      return;
    }
    // The delegate's initial metadata stays initial (headers, then
    // trailers), as gRPC's server sends it; without any, one trailers-only
    // block.
    H2Headers trailers;
    H2Headers& status_block = initial_metadata ? trailers : h;
    add_grpc_status(s, status_block);
    add_metadata(reply_.trailers, status_block);
    if (!initial_metadata) {
      owner_.gateway().submit_response(stream_, h, nullptr);
      return;
    }
    owner_.gateway().submit_headers(stream_, h, false);
    owner_.gateway().submit_headers(stream_, trailers, true);
  }

  // The delegate's stream (UpstreamSink).
  void upstream_headers(H2Headers&& h, bool end) { reply_.add_headers(std::move(h), end); }
  void upstream_data(const uint8_t* data, size_t len) {
    if (delegate_) delegate_->consume(delegate_stream_, len);
    if (reply_too_large_) return;
    if (reply_.body.size() + len > kMaxGrpcMessage + 5) {
      reply_too_large_ = true;
      reply_.body.clear();
      // gRPC's client gives up on such a reply; so does the relay.
      delegate_->reset(delegate_stream_, NGHTTP2_CANCEL);
      upstream_closed(NGHTTP2_CANCEL);
      return;
    }
    reply_.body.append(reinterpret_cast<const char*>(data), len);
  }
  void upstream_end() {}
  void upstream_closed(uint32_t code) {
    const bool unprocessed = code == NGHTTP2_REFUSED_STREAM && delegate_ && delegate_->unprocessed(delegate_stream_);
    delegate_stream_ = 0;
    delegate_.reset();
    if (finished_ || runner_.finished()) return;
    // The delegate said GOAWAY without having seen the call (a server
    // restarting, or closing an idle connection as tonic's and gRPC's do):
    // gRPC's client sends such a call again, on a new connection, once.
    if (unprocessed && !resent_) return resend();
    if (unprocessed) {
      return runner_.on_delegate_done(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, unavailable_message(shared_.options.delegate, "GOAWAY received")),
          false);
    }
    runner_.on_delegate_done(delegate_status(code), true);
  }
  void upstream_taken(size_t) {}
  void upstream_headers_too_large() { headers_too_large_ = true; }

 private:
  void resend() {
    resent_ = true;
    reply_ = H2Answer{};
    delegate_body_ = H2Body{};
    headers_too_large_ = false;
    // The first attempt's body was given away as it went out.
    if (raw_) request_bytes_ = framed_message(request_.SerializeAsString());
    call_delegate();
  }

  // Runs one event on the call and what it submitted, then lets the call
  // go if it is done.
  template <class F>
  void after_event(F&& f) {
    f();
    shared_.flusher.flush();
    maybe_retire();
  }

  void request_complete() {
    if (request_done_ || finished_) return;
    request_done_ = true;
    std::optional<std::string_view> payload = first_message(request_bytes_);
    if (!payload) return finish(grpc::Status(grpc::StatusCode::INTERNAL, "Unable to parse request"));
    const std::string_view rpc = rpc_name(state_.rpc);
    if (!request_.ParseFromArray(payload->data(), static_cast<int>(payload->size()))) {
      return finish(grpc::Status(grpc::StatusCode::INTERNAL, std::string(rpc) + ": the request does not parse as " +
                                                                 Req::descriptor()->full_name()));
    }
    // The delegate gets what gRPC's server would have passed on: that one
    // message, uncompressed.
    if (raw_ && payload->size() + 5 != request_bytes_.size()) request_bytes_ = framed_message(*payload);
    if (raw_ && request_bytes_[0] != 0) request_bytes_[0] = 0;
    state_.sandbox_id = sandbox_id_of(state_.rpc, request_);
    state_.secrets = collect_secrets(request_);
    if (grpc::Status s = admit_call(hops_, shared_.options.wrapper_name, shared_.options.tracker); !s.ok()) {
      return finish(s);
    }
    runner_started_ = true;
    runner_.start();
  }

  H2Headers delegate_headers() {
    H2Headers h;
    h.reserve(metadata_.size() + 9);
    h.push_back({":method", "POST"});
    h.push_back({":scheme", "http"});
    h.push_back({":path", path_});
    h.push_back({":authority", "localhost"});
    h.push_back({"te", "trailers"});
    h.push_back({"content-type", "application/grpc"});
    h.push_back({"user-agent", "openshell-driver-wrapper/" OWRAP_VERSION});
    if (state_.deadline != std::chrono::steady_clock::time_point::max()) {
      h.push_back({"grpc-timeout", format_grpc_timeout(state_.deadline - std::chrono::steady_clock::now())});
    }
    for (H2Header& m : metadata_) h.push_back(std::move(m));
    h.push_back({std::string(kHopsMetadata), std::to_string(hops_ + 1)});
    return h;
  }

  // The delegate's answer as gRPC's client reports it, then the wrapper's
  // own checks: a reply that does not parse, a transport failure named
  // after the delegate.
  grpc::Status delegate_status(uint32_t code) {
    const Delegate& d = shared_.options.delegate;
    if (reply_too_large_) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "delegate \"" + d.name() + "\" sent a " + std::string(rpc_name(state_.rpc)) +
                              " reply larger than " + std::to_string(kMaxGrpcMessage) + " bytes");
    }
    // As gRPC's client refuses them (its limit is lower: 16 KiB).
    if (headers_too_large_) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "received initial metadata size exceeds limit");
    }
    grpc::Status s = reply_.status(code, [&d] { return unavailable_message(d, "the connection was lost"); });
    if (!s.ok()) return s;
    // Without an encoding gRPC's client ignores the compressed flag, and
    // the caller gets the message with it cleared.
    const std::string_view encoding = find_header(reply_.headers, "grpc-encoding");
    if (!reply_.body.empty() && reply_.body[0] == 1 && (encoding.empty() || encoding == "identity")) {
      reply_.body[0] = 0;
    }
    std::optional<std::string_view> payload = single_message(reply_.body);
    static const WireCheck kReplyCheck(*Resp::descriptor());
    const bool parses =
        payload && (raw_ ? kReplyCheck.parses(*payload)
                         : response_.ParseFromArray(payload->data(), static_cast<int>(payload->size())));
    if (!parses) {
      response_.Clear();
      return unparsable_reply_status(d, rpc_name(state_.rpc), Resp::descriptor()->full_name());
    }
    return grpc::Status::OK;
  }

  // The delegate's metadata by the gRPC path's rules (copy_response_metadata):
  // a -bin value is judged on its bytes, and passed on as it came.
  void add_metadata(const H2Headers& from, H2Headers& to) const {
    for (const H2Header& m : from) {
      if (is_binary_metadata(m.name)) {
        if (relayable_response_metadata(m.name, decode_binary_header(m.value), &state_.secrets)) to.push_back(m);
      } else if (auto v = relayable_response_metadata(m.name, m.value, &state_.secrets)) {
        to.push_back({m.name, std::move(*v)});
      }
    }
  }

  // The caller went away, or its deadline passed: a suspended stage is let
  // go, a delegate call in flight is reset (its answer is `why`: the base
  // may have done the work).
  void cancel(const grpc::Status& why) {
    if (!runner_started_) return finish(why);
    runner_.on_cancelled(why);
    if (delegate_stream_ > 0) {
      reset_delegate();
      if (!runner_.finished()) runner_.on_delegate_done(delegate_cut_status(why), true);
    }
  }

  grpc::Status caller_gone_status() const {
    if (CallRunner::at_deadline(state_.deadline, start_, std::chrono::steady_clock::now())) return deadline_passed();
    return grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled by the caller");
  }

  // A delegate call cut because its caller went away answers what gRPC's
  // client reports for a call cut with its server call (the gRPC path
  // links them), so after-phases and the access log read the same.
  static grpc::Status delegate_cut_status(const grpc::Status& why) {
    if (why.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "CANCELLED");
  }

  void on_deadline() {
    if (finished_) return;
    cancel(deadline_passed());
  }

  static grpc::Status deadline_passed() {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the caller's deadline passed");
  }

  void reset_delegate() {
    if (delegate_ && delegate_stream_ > 0) delegate_->reset(delegate_stream_, NGHTTP2_CANCEL);
    delegate_stream_ = 0;
    delegate_.reset();
  }

  void log() {
    logged_ = true;
    log_call({rpc_name(state_.rpc), state_.sandbox_id, false, delivered_, &state_.secrets}, start_, answer_);
  }

  void maybe_retire() {
    if (gateway_closed_ && finished_ && !retired_) {
      retired_ = true;
      owner_.retire(stream_);
    }
  }

  CallOwner& owner_;
  RelayShared& shared_;
  const int32_t stream_;
  const std::chrono::steady_clock::time_point start_;
  CallTracker::Active active_;
  // No stage applies to this RPC: the request and reply are relayed as the
  // bytes that came in (the request is still parsed, for the checks and
  // the access log), as on the gRPC path.
  const bool raw_;
  std::string path_;
  H2Headers metadata_;  // the caller's, for the delegate
  int hops_ = 0;
  std::string request_bytes_;
  Req request_;  // stages may rewrite it; unknown fields are kept
  Resp response_;
  CallState state_;
  grpc::Status answer_;
  std::optional<boost::asio::steady_timer> deadline_timer_;
  std::optional<boost::asio::steady_timer> stage_timer_;
  uint64_t timer_generation_ = 0;
  std::shared_ptr<H2Connection> delegate_;
  int32_t delegate_stream_ = 0;
  UpstreamSink<FrameCall> delegate_sink_{*this};  // the delegate's stream
  H2Body delegate_body_;                          // the request, toward the delegate
  H2Answer reply_;                                // what the delegate sent
  H2Body reply_body_;                             // the answer, toward the caller
  bool reply_too_large_ = false;
  bool resent_ = false;             // the call went to the delegate a second time (resend)
  bool headers_too_large_ = false;  // the delegate sent a header block past the relay's limit
  bool request_done_ = false;
  bool runner_started_ = false;
  bool finished_ = false;
  bool gateway_closed_ = false;
  bool delivered_ = false;
  bool logged_ = false;
  bool retired_ = false;
  std::shared_ptr<void> alive_ = raw_ ? nullptr : std::make_shared<bool>();  // only stages suspend
  CallRunner runner_;  // last: it goes first, abandoning a suspension that still points at this host
};

template <Rpc R>
std::unique_ptr<H2StreamSink> make_call(CallOwner& owner, RelayShared& shared, int32_t stream,
                                        const H2Headers& headers) {
  using Types = RpcTypes<R>;
  return std::make_unique<FrameCall<typename Types::Request, typename Types::Response>>(owner, shared, stream, R,
                                                                                        headers);
}

}  // namespace

std::shared_ptr<H2Connection> RelayShared::delegate_connection(std::string* error) {
  if (keep_if_usable(delegate)) return delegate;
  if (stopping) {
    *error = "the wrapper is stopping";
    return nullptr;
  }
  auto fd = connect_unix(options.delegate.socket_path(), true);
  if (!fd) {
    *error = fd.error();
    return nullptr;
  }
  delegate = H2Connection::make(io, std::move(fd.value()), H2Connection::Side::kClient, flusher, nullptr,
                                "delegate " + options.delegate.name());
  delegate->start();
  return delegate;
}

std::unique_ptr<H2StreamSink> make_frame_call(CallOwner& owner, RelayShared& shared, int32_t stream, Rpc rpc,
                                              const H2Headers& headers) {
  switch (rpc) {
#define OWRAP_FRAME_CALL(Name, Req, Resp, Streaming, Ref) \
  case Rpc::k##Name:                                      \
    return make_call<Rpc::k##Name>(owner, shared, stream, headers);
    OWRAP_COMPUTE_DRIVER_RPCS(OWRAP_FRAME_CALL)
#undef OWRAP_FRAME_CALL
  }
  return nullptr;
}

}  // namespace owrap
