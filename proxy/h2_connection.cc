#include "proxy/h2_connection.h"

#include "common/log.h"

#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <boost/asio/post.hpp>

#include <cerrno>
#include <cstring>

namespace owrap {

namespace {
// Past this many bytes the socket has not taken, nghttp2 is asked for no
// more: its streams' bodies stay where they are, and flow control holds
// their producers.
constexpr size_t kMaxUnsent = 256 * 1024;
constexpr size_t kReadChunk = 32 * 1024;
// A header block larger than this resets its stream (gRPC's own server
// refuses far less: 16 KiB).
constexpr size_t kMaxHeaderBlock = 64 * 1024;
// Flow-control windows the relay grants its peers: a stream's, and the
// whole connection's.
constexpr uint32_t kStreamWindow = 1u << 20;
constexpr uint32_t kConnectionWindow = 16u << 20;
}  // namespace

std::string_view find_header(const H2Headers& headers, std::string_view name) {
  for (const H2Header& h : headers) {
    if (h.name == name) return h.value;
  }
  return {};
}

void H2Flusher::mark(const std::shared_ptr<H2Connection>& c) {
  dirty_.push_back(c);
}

void H2Flusher::flush() {
  // A flush may mark further connections (a body taken on one side lets the
  // other side's window open): keep going until nothing is left.
  while (!dirty_.empty()) {
    batch_.swap(dirty_);
    for (auto& c : batch_) {
      c->marked_ = false;
      c->flush();
    }
    batch_.clear();
  }
}

struct H2Connection::Callbacks {
  static H2Connection& self(void* user) { return *static_cast<H2Connection*>(user); }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame*, void* user) {
    H2Connection& c = self(user);
    c.building_.clear();
    // A moved-from block has no room left: room for a gRPC request's
    // headers at once, not five reallocations on the way.
    c.building_.reserve(12);
    c.building_bytes_ = 0;
    return 0;
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                       const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    H2Connection& c = self(user);
    c.building_bytes_ += namelen + valuelen + 32;
    if (c.building_bytes_ > kMaxHeaderBlock) {
      // nghttp2 resets the stream and skips the rest of the block.
      if (H2StreamSink* s = c.sink(frame->hd.stream_id)) s->on_headers_too_large();
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    c.building_.push_back({std::string(reinterpret_cast<const char*>(name), namelen),
                           std::string(reinterpret_cast<const char*>(value), valuelen)});
    return 0;
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    H2Connection& c = self(user);
    const int32_t id = frame->hd.stream_id;
    const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && c.acceptor_ != nullptr && c.sink(id) == nullptr) {
          if (H2StreamSink* s = c.acceptor_->accept_stream(id, c.building_)) c.sinks_[id] = s;
        }
        if (H2StreamSink* s = c.sink(id)) {
          s->on_headers(std::move(c.building_), end);
        } else if (c.side_ == Side::kServer) {
          nghttp2_submit_rst_stream(c.session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        }
        c.building_.clear();
        break;
      case NGHTTP2_DATA:
        if (end) {
          if (H2StreamSink* s = c.sink(id)) s->on_end_stream();
        }
        break;
      case NGHTTP2_GOAWAY:
        // nghttp2 closes the streams past it (REFUSED_STREAM) right after.
        c.goaway_last_stream_ = frame->goaway.last_stream_id;
        break;
      default:
        break;
    }
    return 0;
  }

  // A server that has sent its whole answer while the caller's side is
  // still open resets the stream with NO_ERROR (RFC 9113 8.1), as gRPC's
  // server does: otherwise a caller that never ends its side keeps the
  // stream, and its call, open for as long as the connection lasts.
  static int on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    H2Connection& c = self(user);
    const bool ends = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
                      (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA);
    if (ends && c.side_ == Side::kServer &&
        nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
  }

  static int on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
    H2Connection& c = self(user);
    if (H2StreamSink* s = c.sink(id)) {
      s->on_data(data, len);
    } else {
      nghttp2_session_consume(session, id, len);  // nobody wants it; keep the connection's window open
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* user) {
    H2Connection& c = self(user);
    auto it = c.sinks_.find(id);
    if (it == c.sinks_.end()) return 0;
    H2StreamSink* s = it->second;
    c.sinks_.erase(it);
    s->on_close(error_code);
    return 0;
  }

  static ssize_t read_body(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                           nghttp2_data_source* source, void* user) {
    H2Connection& c = self(user);
    auto* body = static_cast<H2Body*>(source->ptr);
    size_t n = std::min(length, body->bytes.size() - body->offset);
    if (n > 0) {
      std::memcpy(buf, body->bytes.data() + body->offset, n);
      body->offset += n;
      if (body->empty()) {
        body->bytes.clear();
        body->offset = 0;
      }
    }
    if (body->empty()) {
      if (!body->finished) {
        if (n == 0) return NGHTTP2_ERR_DEFERRED;
      } else {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (body->trailers) {
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          NvList nva(*body->trailers);
          nghttp2_submit_trailer(session, id, nva.data(), nva.size());
          body->trailers.reset();
        }
      }
    }
    if (n > 0) {
      if (H2StreamSink* s = c.sink(id)) s->on_body_taken(n);
    }
    return static_cast<ssize_t>(n);
  }

  // The headers as nghttp2 takes them, pointing into `headers`; on the
  // stack for a block of gRPC's usual size.
  class NvList {
   public:
    explicit NvList(const H2Headers& headers) {
      nghttp2_nv* out = headers.size() <= kInline ? inline_ : (heap_.resize(headers.size()), heap_.data());
      for (size_t i = 0; i < headers.size(); i++) {
        const H2Header& h = headers[i];
        out[i] = {reinterpret_cast<uint8_t*>(const_cast<char*>(h.name.data())),
                  reinterpret_cast<uint8_t*>(const_cast<char*>(h.value.data())), h.name.size(), h.value.size(),
                  NGHTTP2_NV_FLAG_NONE};
      }
      data_ = out;
      size_ = headers.size();
    }
    const nghttp2_nv* data() const { return data_; }
    size_t size() const { return size_; }

   private:
    static constexpr size_t kInline = 16;
    nghttp2_nv inline_[kInline];
    std::vector<nghttp2_nv> heap_;
    const nghttp2_nv* data_ = nullptr;
    size_t size_ = 0;
  };
};

std::shared_ptr<H2Connection> H2Connection::make(boost::asio::io_context& io, UniqueFd fd, Side side,
                                                 H2Flusher& flusher, H2StreamAcceptor* acceptor, std::string who) {
  std::shared_ptr<H2Connection> c(new H2Connection(io, std::move(fd), side, flusher, acceptor, std::move(who)));
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Callbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &Callbacks::on_frame_send);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Windows open only as the relay passes bytes on (consume), so a slow
  // reader on one side holds back the writer on the other.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  int rv = side == Side::kServer ? nghttp2_session_server_new2(&c->session_, cbs, c.get(), opt)
                                 : nghttp2_session_client_new2(&c->session_, cbs, c.get(), opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    c->session_ = nullptr;
    return c;
  }
  // A client side takes no pushed streams (the relay would only ignore them).
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
                                       {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  nghttp2_submit_settings(c->session_, NGHTTP2_FLAG_NONE, settings, side == Side::kClient ? 2 : 1);
  nghttp2_session_set_local_window_size(c->session_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(kConnectionWindow));
  return c;
}

H2Connection::H2Connection(boost::asio::io_context& io, UniqueFd fd, Side side, H2Flusher& flusher,
                           H2StreamAcceptor* acceptor, std::string who)
    : socket_(io, fd.release()),
      side_(side),
      flusher_(flusher),
      acceptor_(acceptor),
      who_(std::move(who)),
      read_buf_(new uint8_t[kReadChunk]) {}

H2Connection::~H2Connection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

void H2Connection::start() {
  if (session_ == nullptr) return fail("cannot make an HTTP/2 session");
  dirty();
  read_some();
}

bool H2Connection::accepts_streams() const {
  if (!open()) return false;
  // Once the peer said GOAWAY, or our stream ids near their end.
  return nghttp2_session_get_next_stream_id(session_) < (1u << 30) &&
         nghttp2_session_check_request_allowed(session_) != 0;
}

H2StreamSink* H2Connection::sink(int32_t stream) const {
  auto it = sinks_.find(stream);
  return it == sinks_.end() ? nullptr : it->second;
}

int32_t H2Connection::submit_request(const H2Headers& headers, H2Body* body, H2StreamSink* sink) {
  if (!open()) return NGHTTP2_ERR_INVALID_STATE;
  Callbacks::NvList nva(headers);
  nghttp2_data_provider provider{};
  provider.source.ptr = body;
  provider.read_callback = &Callbacks::read_body;
  int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), body ? &provider : nullptr, nullptr);
  if (id > 0) {
    sinks_[id] = sink;
    dirty();
  }
  return id;
}

int H2Connection::submit_response(int32_t stream, const H2Headers& headers, H2Body* body) {
  if (!open()) return NGHTTP2_ERR_INVALID_STATE;
  Callbacks::NvList nva(headers);
  nghttp2_data_provider provider{};
  provider.source.ptr = body;
  provider.read_callback = &Callbacks::read_body;
  int rv = nghttp2_submit_response(session_, stream, nva.data(), nva.size(), body ? &provider : nullptr);
  dirty();
  return rv;
}

int H2Connection::submit_headers(int32_t stream, const H2Headers& headers, bool end_stream) {
  if (!open()) return NGHTTP2_ERR_INVALID_STATE;
  Callbacks::NvList nva(headers);
  int rv = nghttp2_submit_headers(session_, end_stream ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, stream, nullptr,
                                  nva.data(), nva.size(), nullptr);
  dirty();
  return rv;
}

void H2Connection::body_grew(int32_t stream) {
  if (!open()) return;
  nghttp2_session_resume_data(session_, stream);
  dirty();
}

void H2Connection::reset(int32_t stream, uint32_t error_code) {
  sinks_.erase(stream);
  // Even while closing: the stream is closed in nghttp2 before anything
  // more is sent, so no body of a call that is going away is read again.
  if (session_ == nullptr || torn_down_) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream, error_code);
  dirty();
}

void H2Connection::consume(int32_t stream, size_t len) {
  if (!open() || len == 0) return;
  nghttp2_session_consume(session_, stream, len);
  dirty();
}

void H2Connection::dirty() {
  if (marked_ || torn_down_) return;
  marked_ = true;
  flusher_.mark(shared_from_this());
}

// async_read_some, not async_wait + recv: Asio reads when the event comes
// and, after a short read (the socket was empty at that instant, so any
// later byte makes a new edge), queues the next read without a syscall.
// A wait costs an epoll_ctl to re-arm and a recv that ends in EAGAIN.
void H2Connection::read_some() {
  if (torn_down_ || closing_) return;
  socket_.async_read_some(boost::asio::buffer(read_buf_.get(), kReadChunk),
                          [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                            if (self->torn_down_) return;
                            if (ec == boost::asio::error::operation_aborted) return;
                            if (ec == boost::asio::error::eof) {
                              self->fail("peer closed the connection");
                            } else if (ec) {
                              self->fail("read: " + ec.message());
                            } else {
                              self->on_read(n);
                            }
                            self->flusher_.flush();
                          });
}

void H2Connection::on_read(size_t n) {
  ssize_t used = nghttp2_session_mem_recv(session_, read_buf_.get(), n);
  if (torn_down_) return;
  if (used < 0) return fail(std::string("HTTP/2 error: ") + nghttp2_strerror(static_cast<int>(used)));
  dirty();
  read_some();
}

// Sends what nghttp2 has, at most kMaxUnsent at a time, until nghttp2 has
// nothing more (a window or the bodies ran out) or the socket is full (then
// the write-readiness handler goes on). Stopping at the cap with the socket
// still taking bytes would leave frames in nghttp2 that no event sends.
void H2Connection::flush() {
  if (torn_down_ || session_ == nullptr) return;
  bool more = true;
  while (more && !writing_ && !torn_down_) {
    more = false;
    while (out_.size() - out_offset_ < kMaxUnsent) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) return fail(std::string("HTTP/2 error: ") + nghttp2_strerror(static_cast<int>(n)));
      if (n == 0) break;
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      more = out_.size() - out_offset_ >= kMaxUnsent;
    }
    send_pending();
  }
  if (torn_down_) return;
  if (out_offset_ == out_.size() &&
      (closing_ || (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)))) {
    tell_closed();  // nothing should be open by now; if something is, it hears so
    teardown();
  }
}

void H2Connection::send_pending() {
  while (out_offset_ < out_.size()) {
    ssize_t n = ::send(socket_.native_handle(), out_.data() + out_offset_, out_.size() - out_offset_,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_offset_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return wait_writable();
    return fail(std::string("write: ") + std::strerror(errno));
  }
  out_.clear();
  out_offset_ = 0;
}

void H2Connection::wait_writable() {
  writing_ = true;
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->writing_ = false;
                       if (ec || self->torn_down_) return;
                       // flush() sends what is left first, then what nghttp2 has.
                       self->dirty();
                       self->flusher_.flush();
                     });
}

void H2Connection::close() {
  if (!open()) return;
  closing_ = true;
  nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  tell_closed();
  dirty();
}

void H2Connection::tell_closed() {
  auto sinks = std::move(sinks_);
  sinks_.clear();
  for (auto& [id, s] : sinks) s->on_close(kConnectionLost);
  if (acceptor_ != nullptr) {
    H2StreamAcceptor* a = acceptor_;
    acceptor_ = nullptr;
    a->on_connection_closed();
  }
}

void H2Connection::fail(const std::string& why) {
  if (torn_down_) return;
  log_debug("HTTP/2 connection closed", {{"peer", who_}, {"reason", why}});
  closing_ = true;
  out_.clear();
  out_offset_ = 0;
  tell_closed();
  teardown();
}

void H2Connection::teardown() {
  if (torn_down_) return;
  torn_down_ = true;
  closing_ = true;
  boost::system::error_code ignored;
  socket_.cancel(ignored);
  ::shutdown(socket_.native_handle(), SHUT_RDWR);
  // The session may be on the stack (a callback led here): freed later.
  boost::asio::post(socket_.get_executor(), [self = shared_from_this()] {
    boost::system::error_code ignored;
    self->socket_.close(ignored);
    if (self->session_ != nullptr) {
      nghttp2_session_del(self->session_);
      self->session_ = nullptr;
    }
  });
}

bool keep_if_usable(std::shared_ptr<H2Connection>& c) {
  if (c && c->accepts_streams()) return true;
  if (c && c->open_streams() == 0) c->close();
  c.reset();
  return false;
}

}  // namespace owrap
