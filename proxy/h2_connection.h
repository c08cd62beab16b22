// One HTTP/2 connection on a Unix stream socket, driven by nghttp2 on one
// Asio thread: the frame relay's building block (proxy/frame_relay.h), used
// for the gateway's connections (server side), the delegate's and the
// wrapper's own gRPC server's (client side).
//
// What a read brings is fed to nghttp2 at once. Writes are not
// made per frame: whatever a read's callbacks submitted, on this connection
// or another, goes out in one send per connection when that read has been
// handled (`H2Flusher`). Write readiness is waited for only while a send
// could not finish, the way HAProxy asks for it (gRPC's epoll engine asks
// for it always and is woken by every read the peer makes).
#pragma once

#include "common/uds.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct nghttp2_session;

namespace owrap {

struct H2Header {
  std::string name;
  std::string value;
};
using H2Headers = std::vector<H2Header>;
std::string_view find_header(const H2Headers& headers, std::string_view name);

// What one end of a stream hears from its connection. Every call comes on
// the io thread; after on_close nothing more comes, and the connection
// forgets the sink.
class H2StreamSink {
 public:
  virtual ~H2StreamSink() = default;
  // A header block: the request or response headers, then perhaps
  // trailers. `end_stream`: the block also ends the peer's side (no
  // on_end_stream follows).
  virtual void on_headers(H2Headers&& headers, bool end_stream) = 0;
  virtual void on_data(const uint8_t* data, size_t len) = 0;
  // The peer ended its side (END_STREAM on a DATA frame).
  virtual void on_end_stream() = 0;
  // The stream is gone: closed both ways (0) or reset / connection lost
  // (an HTTP/2 error code, or kConnectionLost).
  virtual void on_close(uint32_t error_code) = 0;
  // The connection sent bytes of this stream's body: the producer may take
  // as many more from its own peer (flow control across the relay).
  virtual void on_body_taken(size_t) {}
  // A header block passed the relay's limit: the stream is reset
  // (on_close with an error follows).
  virtual void on_headers_too_large() {}
};
inline constexpr uint32_t kConnectionLost = 0xffffffff;

// The second sink of a call that relays between two connections: the call
// is the sink on the caller's connection, this forwards the other
// connection's stream to the call's upstream_* methods.
template <class Call>
struct UpstreamSink final : H2StreamSink {
  explicit UpstreamSink(Call& c) : call(c) {}
  void on_headers(H2Headers&& h, bool end) override { call.upstream_headers(std::move(h), end); }
  void on_data(const uint8_t* d, size_t n) override { call.upstream_data(d, n); }
  void on_end_stream() override { call.upstream_end(); }
  void on_close(uint32_t code) override { call.upstream_closed(code); }
  void on_body_taken(size_t n) override { call.upstream_taken(n); }
  void on_headers_too_large() override { call.upstream_headers_too_large(); }
  Call& call;
};

// Bytes waiting to go out as one stream's DATA frames, then its trailers.
struct H2Body {
  std::string bytes;
  size_t offset = 0;
  bool finished = false;              // nothing more after `bytes`
  std::optional<H2Headers> trailers;  // sent once `bytes` are out, if finished
  bool empty() const { return offset == bytes.size(); }
};

class H2Connection;

// Connections with submitted frames not yet sent: flushed once the event
// at hand has been handled, so a read that answers several streams, or
// relays to another connection, costs one send per connection.
class H2Flusher {
 public:
  void mark(const std::shared_ptr<H2Connection>& c);
  void flush();

 private:
  std::vector<std::shared_ptr<H2Connection>> dirty_;
  std::vector<std::shared_ptr<H2Connection>> batch_;  // kept, with its room, between flushes
};

// A server-side connection hands each new stream, with its request
// headers, to its acceptor, which picks the stream's sink (the headers then
// reach that sink as its first on_headers). No sink: the stream is refused.
class H2StreamAcceptor {
 public:
  virtual ~H2StreamAcceptor() = default;
  virtual H2StreamSink* accept_stream(int32_t stream_id, const H2Headers& request_headers) = 0;
  // The connection is closed (peer gone, protocol error or close()).
  virtual void on_connection_closed() = 0;
};

class H2Connection : public std::enable_shared_from_this<H2Connection> {
 public:
  enum class Side { kServer, kClient };
  // `acceptor` (server side) outlives the connection or detaches with
  // close(); `who` names the peer in log lines.
  static std::shared_ptr<H2Connection> make(boost::asio::io_context& io, UniqueFd fd, Side side, H2Flusher& flusher,
                                            H2StreamAcceptor* acceptor, std::string who);
  ~H2Connection();
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  // Sends the preface and settings and starts reading.
  void start();
  bool open() const { return session_ != nullptr && !closing_; }
  // False once the peer sent GOAWAY or stream ids ran out: new streams go
  // to a fresh connection.
  bool accepts_streams() const;

  // Client side: a new stream; its id, or a negative nghttp2 error.
  // `body` (owned by the caller until the stream closes) may be null for a
  // request without a body.
  int32_t submit_request(const H2Headers& headers, H2Body* body, H2StreamSink* sink);
  // Server side: the response headers, then `body` (null: the headers end
  // the stream, a trailers-only answer).
  int submit_response(int32_t stream, const H2Headers& headers, H2Body* body);
  // Server side: a header block without a body (response headers with
  // `end_stream` false, then trailers with it true).
  int submit_headers(int32_t stream, const H2Headers& headers, bool end_stream);
  // New bytes (or the end, or trailers) in a body given to a submit call.
  void body_grew(int32_t stream);
  void reset(int32_t stream, uint32_t error_code);
  // `len` bytes of `stream`'s DATA have been dealt with: the peer may send
  // as many more.
  void consume(int32_t stream, size_t len);
  // GOAWAY, then closes once the frames are out; every sink hears
  // on_close(kConnectionLost) for streams still open.
  void close();
  // Client side: the peer's GOAWAY said it never processed `stream` (its
  // id is past the GOAWAY's last-stream-id), so it may be sent again.
  bool unprocessed(int32_t stream) const { return goaway_last_stream_ >= 0 && stream > goaway_last_stream_; }
  const std::string& who() const { return who_; }
  size_t open_streams() const { return sinks_.size(); }

  // Internal: nghttp2 callbacks.
  struct Callbacks;

 private:
  H2Connection(boost::asio::io_context& io, UniqueFd fd, Side side, H2Flusher& flusher, H2StreamAcceptor* acceptor,
               std::string who);
  void read_some();
  void on_read(size_t n);
  void dirty();
  friend class H2Flusher;
  void flush();
  void send_pending();
  void wait_writable();
  void fail(const std::string& why);
  // Every sink hears on_close(kConnectionLost), then the acceptor hears the
  // connection went; neither hears more.
  void tell_closed();
  void teardown();
  H2StreamSink* sink(int32_t stream) const;

  boost::asio::posix::stream_descriptor socket_;
  Side side_;
  H2Flusher& flusher_;
  H2StreamAcceptor* acceptor_;
  std::string who_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, H2StreamSink*> sinks_;
  H2Headers building_;  // the header block being received (HTTP/2 never interleaves two)
  size_t building_bytes_ = 0;
  int32_t goaway_last_stream_ = -1;  // the peer's GOAWAY's last-stream-id, once one came
  std::unique_ptr<uint8_t[]> read_buf_;
  std::string out_;  // bytes nghttp2 produced that the socket did not take yet
  size_t out_offset_ = 0;
  bool marked_ = false;
  bool writing_ = false;  // waiting for write readiness
  bool closing_ = false;
  bool torn_down_ = false;
};

// True when `c` can take a new stream; otherwise `c` is let go (closed
// first if no stream of it is open) and the caller makes a new one.
bool keep_if_usable(std::shared_ptr<H2Connection>& c);

}  // namespace owrap
