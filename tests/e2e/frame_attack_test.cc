// The frame relay attacked with hand-made HTTP/2: requests a gRPC client
// would never send (no message, two messages, a short or compressed one,
// odd headers), and a delegate that answers as no gRPC server would. Each
// answer is compared with what the wrapper gives with relay = "grpc".
#include "proxy/grpc_h2.h"
#include "tests/support/harness.h"

#include <nghttp2/nghttp2.h>
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

using namespace owrap::test;
using Catch::Contains;

namespace {

using Clock = std::chrono::steady_clock;
const std::string kGet = "/openshell.compute.v1.ComputeDriver/GetSandbox";

std::string grpc_frame(const std::string& payload, uint8_t flag = 0) {
  std::string f = owrap::framed_message(payload);
  f[0] = static_cast<char>(flag);
  return f;
}

std::string get_request(const std::string& id) {
  v1::GetSandboxRequest req;
  req.set_sandbox_id(id);
  return req.SerializeAsString();
}

using Headers = std::vector<std::pair<std::string, std::string>>;

Headers grpc_request_headers(const std::string& path) {
  return {{":method", "POST"},         {":scheme", "http"}, {":path", path},
          {":authority", "localhost"}, {"te", "trailers"},  {"content-type", "application/grpc"}};
}

std::string header(const Headers& h, const std::string& name) {
  for (auto& [n, v] : h) {
    if (n == name) return v;
  }
  return {};
}

// One stream's answer as the client saw it.
struct StreamAnswer {
  Headers headers;   // the first block
  Headers trailers;  // the second block, if any
  int blocks = 0;
  std::string data;
  bool closed = false;
  uint32_t rst = 0;  // RST_STREAM's code, or the close's error code
  // "<grpc-status> <grpc-message>", from whichever block carries it, or
  // "http <status>", or "rst <code>".
  std::string status() const {
    for (const Headers* h : {&trailers, &headers}) {
      std::string s = header(*h, "grpc-status");
      if (!s.empty()) return s + " " + header(*h, "grpc-message");
    }
    if (!header(headers, ":status").empty() && header(headers, ":status") != "200") {
      return "http " + header(headers, ":status");
    }
    if (rst != 0) return "rst " + std::to_string(rst);
    return closed ? "closed without status" : "no answer";
  }
};

// A client made of nghttp2: requests with any headers and any body bytes,
// sent on a socket of the test's own; the answers read back per stream.
class RawClient {
 public:
  explicit RawClient(const std::string& socket) : fd_(raw_connect(socket)) {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n,
                                                             size_t nl, const uint8_t* v, size_t vl, uint8_t, void* u) {
      auto& a = static_cast<RawClient*>(u)->streams_[f->hd.stream_id];
      (a.blocks <= 1 ? a.headers : a.trailers)
          .emplace_back(std::string((const char*)n, nl), std::string((const char*)v, vl));
      return 0;
    });
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, [](nghttp2_session*, const nghttp2_frame* f, void* u) {
      static_cast<RawClient*>(u)->streams_[f->hd.stream_id].blocks++;
      return 0;
    });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cbs, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* d, size_t n, void* u) {
          static_cast<RawClient*>(u)->streams_[id].data.append((const char*)d, n);
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs,
                                                           [](nghttp2_session*, int32_t id, uint32_t code, void* u) {
                                                             auto& a = static_cast<RawClient*>(u)->streams_[id];
                                                             a.closed = true;
                                                             a.rst = code;
                                                             return 0;
                                                           });
    nghttp2_session_client_new(&session_, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~RawClient() {
    nghttp2_session_del(session_);
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return fd_ >= 0; }

  // A request whose body is `body` as it is (no framing added); no body:
  // the headers end the stream.
  int32_t request(const Headers& headers, std::optional<std::string> body, bool end = true) {
    std::vector<nghttp2_nv> nv;
    for (auto& [n, v] : headers) {
      nv.push_back({(uint8_t*)n.data(), (uint8_t*)v.data(), n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    if (!body) {
      return nghttp2_submit_headers(session_, end ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, -1, nullptr, nv.data(),
                                    nv.size(), nullptr);
    }
    bodies_.push_back(std::make_unique<Body>(Body{std::move(*body), end}));
    nghttp2_data_provider p{};
    p.source.ptr = bodies_.back().get();
    p.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags, nghttp2_data_source* src,
                         void*) -> ssize_t {
      auto* b = static_cast<Body*>(src->ptr);
      size_t n = std::min(len, b->bytes.size());
      std::memcpy(buf, b->bytes.data(), n);
      b->bytes.erase(0, n);
      if (b->bytes.empty()) {
        if (!b->end) return n == 0 ? ssize_t{NGHTTP2_ERR_DEFERRED} : static_cast<ssize_t>(n);
        *flags |= NGHTTP2_DATA_FLAG_EOF;
      }
      return static_cast<ssize_t>(n);
    };
    return nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), &p, nullptr);
  }
  nghttp2_session* session() { return session_; }

  // Sends what was submitted and reads until every stream in `ids` closed,
  // the peer closed, or `timeout`.
  void exchange(const std::vector<int32_t>& ids, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto until = Clock::now() + timeout;
    while (Clock::now() < until && !eof_) {
      flush();
      bool all = !ids.empty();
      for (int32_t id : ids) all = all && streams_[id].closed;
      if (all) return;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[65536];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        break;
      }
      if (nghttp2_session_mem_recv(session_, (const uint8_t*)buf, static_cast<size_t>(n)) < 0) eof_ = true;
    }
  }
  void flush() {
    std::string out;
    for (;;) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out.append((const char*)data, static_cast<size_t>(n));
    }
    if (!out.empty()) send_all(fd_, out);
  }
  StreamAnswer& answer(int32_t id) { return streams_[id]; }

 private:
  struct Body {
    std::string bytes;
    bool end;
  };
  int fd_;
  nghttp2_session* session_ = nullptr;
  std::vector<std::unique_ptr<Body>> bodies_;
  std::map<int32_t, StreamAnswer> streams_;
  bool eof_ = false;
};

// One request, its answer's status.
std::string ask(const std::string& socket, const Headers& headers, std::optional<std::string> body, bool end = true) {
  RawClient c(socket);
  REQUIRE(c.connected());
  int32_t id = c.request(headers, std::move(body), end);
  REQUIRE(id > 0);
  c.exchange({id});
  const StreamAnswer& a = c.answer(id);
  std::string status = a.status();
  if (status == "0 ") {
    v1::GetSandboxResponse resp;
    if (a.data.size() >= 5 && a.data[0] == 0 && resp.ParseFromString(a.data.substr(5))) {
      status += "[" + resp.sandbox().id() + "]";
    }
  }
  return status;
}

void create_sandbox_via(const std::string& socket, const std::string& id) {
  auto stub = stub_for(socket);
  grpc::ClientContext ctx;
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox(id);
  v1::CreateSandboxResponse resp;
  REQUIRE(stub->CreateSandbox(&ctx, req, &resp).ok());
}

WrapperSpec spec_for(const std::string& name, const std::string& socket, const std::string& relay) {
  WrapperSpec spec{name, "memory", "nested", {}};
  spec.endpoint_socket = socket;
  spec.extra_toml = "relay = \"" + relay + "\"\n";
  return spec;
}

std::string neutral(std::string s, const std::string& name) {
  for (size_t at = s.find(name); at != std::string::npos; at = s.find(name, at + 1)) s.replace(at, name.size(), "W");
  return s;
}

}  // namespace
namespace {

// A delegate made of nghttp2: GetCapabilities and WatchSandboxes as a
// driver answers them, every other call as `answer` says, which may break
// any rule of gRPC's.
class FakeDelegate {
 public:
  struct Conn;
  using Answer = std::function<void(Conn&, int32_t stream)>;

  struct Conn {
    FakeDelegate& owner;
    int fd;
    nghttp2_session* session = nullptr;
    std::map<int32_t, std::string> paths;
    std::map<int32_t, std::string> requests;                                   // each stream's request body
    std::map<int32_t, std::pair<std::string, std::optional<Headers>>> bodies;  // body, trailers
    bool dead = false;

    void headers(int32_t stream, const Headers& h, bool end) {
      auto nv = to_nv(h);
      nghttp2_submit_headers(session, end ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, stream, nullptr, nv.data(),
                             nv.size(), nullptr);
    }
    // Response headers, `body`, then `trailers` (none: the body ends the stream).
    void respond(int32_t stream, const Headers& h, std::string body, std::optional<Headers> trailers) {
      bodies[stream] = {std::move(body), std::move(trailers)};
      nghttp2_data_provider p{};
      p.source.ptr = &bodies[stream];
      p.read_callback = [](nghttp2_session* s, int32_t id, uint8_t* buf, size_t len, uint32_t* flags,
                           nghttp2_data_source* src, void*) -> ssize_t {
        auto* b = static_cast<std::pair<std::string, std::optional<Headers>>*>(src->ptr);
        size_t n = std::min(len, b->first.size());
        std::memcpy(buf, b->first.data(), n);
        b->first.erase(0, n);
        if (b->first.empty()) {
          *flags |= NGHTTP2_DATA_FLAG_EOF;
          if (b->second) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            auto nv = to_nv(*b->second);
            nghttp2_submit_trailer(s, id, nv.data(), nv.size());
          }
        }
        return static_cast<ssize_t>(n);
      };
      auto nv = to_nv(h);
      nghttp2_submit_response(session, stream, nv.data(), nv.size(), &p);
    }
    void ok(int32_t stream, const std::string& message) {
      respond(stream, ok_headers(), grpc_frame(message), Headers{{"grpc-status", "0"}});
    }
    static Headers ok_headers() { return {{":status", "200"}, {"content-type", "application/grpc"}}; }
    static std::vector<nghttp2_nv> to_nv(const Headers& h) {
      std::vector<nghttp2_nv> nv;
      for (auto& [n, v] : h) {
        nv.push_back({(uint8_t*)n.data(), (uint8_t*)v.data(), n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
      }
      return nv;
    }
    void flush() {
      for (;;) {
        const uint8_t* data = nullptr;
        ssize_t n = nghttp2_session_mem_send(session, &data);
        if (n <= 0) break;
        if (!send_all(fd, std::string_view((const char*)data, static_cast<size_t>(n)))) break;
      }
    }
  };

  FakeDelegate(const std::string& socket, Answer answer) : socket_(socket), answer_(std::move(answer)) {
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket.data(), socket.size());
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_, 64) == 0);
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeDelegate() {
    stop_ = true;
    thread_.join();
    for (auto& c : conns_) drop(*c);
    ::close(listener_);
  }
  void set_answer(Answer a) {
    std::lock_guard<std::mutex> l(mu_);
    answer_ = std::move(a);
  }
  // Streams of any method but the probes', counted as they arrive.
  int calls() const { return calls_; }
  std::string last_request() {
    std::lock_guard<std::mutex> l(mu_);
    return last_request_;
  }

 private:
  void loop() {
    while (!stop_) {
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (auto& c : conns_) fds.push_back({c->fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) accept_one();
      for (size_t i = 1; i < fds.size(); i++) {
        if (fds[i].revents == 0) continue;
        Conn& c = *conns_[i - 1];
        char buf[65536];
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n <= 0 || nghttp2_session_mem_recv(c.session, (const uint8_t*)buf, static_cast<size_t>(n)) < 0) {
          c.dead = true;
          continue;
        }
        if (!c.dead) c.flush();
      }
      for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->dead) {
          drop(**it);
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
    }
  }
  void drop(Conn& c) {
    if (c.session) nghttp2_session_del(c.session);
    c.session = nullptr;
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
  }
  void accept_one() {
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    auto c = std::make_unique<Conn>(Conn{*this, fd});
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n,
                                                             size_t nl, const uint8_t* v, size_t vl, uint8_t, void* u) {
      if (std::string_view((const char*)n, nl) == ":path") {
        static_cast<Conn*>(u)->paths[f->hd.stream_id] = std::string((const char*)v, vl);
      }
      return 0;
    });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cbs, [](nghttp2_session*, uint8_t, int32_t id, const uint8_t* d, size_t n, void* u) {
          static_cast<Conn*>(u)->requests[id].append((const char*)d, n);
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, [](nghttp2_session*, const nghttp2_frame* f, void* u) {
      auto& c = *static_cast<Conn*>(u);
      const bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
      if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && end) c.owner.dispatch(c, f->hd.stream_id);
      return 0;
    });
    nghttp2_option* opt = nullptr;
    nghttp2_option_new(&opt);
    nghttp2_option_set_max_send_header_block_length(opt, 1 << 20);  // a delegate may send huge headers
    nghttp2_session_server_new2(&c->session, cbs, c.get(), opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, nullptr, 0);
    c->flush();
    conns_.push_back(std::move(c));
  }
  void dispatch(Conn& c, int32_t stream) {
    const std::string& path = c.paths[stream];
    if (path.find("GetCapabilities") != std::string::npos) {
      v1::GetCapabilitiesResponse r;
      r.set_driver_name("fake");
      return c.ok(stream, r.SerializeAsString());
    }
    if (path.find("WatchSandboxes") != std::string::npos) return c.headers(stream, Conn::ok_headers(), false);
    calls_++;
    std::lock_guard<std::mutex> l(mu_);
    last_request_ = c.requests[stream];
    answer_(c, stream);
  }

  std::string socket_;
  std::mutex mu_;
  Answer answer_;
  std::string last_request_;
  int listener_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> calls_{0};
  std::vector<std::unique_ptr<Conn>> conns_;
};

std::string sandbox_reply(const std::string& id) {
  v1::GetSandboxResponse r;
  r.mutable_sandbox()->set_id(id);
  return r.SerializeAsString();
}

std::string get_status(const std::string& socket, const std::string& wrapper) {
  auto stub = stub_for(socket);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetSandboxRequest req;
  req.set_sandbox_id("s");
  v1::GetSandboxResponse resp;
  grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
  return std::to_string(s.error_code()) + " " + neutral(s.error_message(), wrapper) + " [" + resp.sandbox().id() + "]";
}

}  // namespace

// Requests no gRPC client sends: the frame relay answered most of them
// "INTERNAL: GetSandbox: the request does not parse as ..." where gRPC's
// server serves the first message (a second one, a compressed flag without
// an encoding, a caller that never ends its side) or answers "Unable to
// parse request" (no message, one cut short); a call without te went to
// the delegate; a grpc-timeout of 99999999H (tonic's for a Duration too
// large to write) wrapped to a deadline already passed.
TEST_CASE("frame attack: requests no gRPC client sends get gRPC's server's answers", "[e2e][frames][attack][parity]") {
  TempDir dir;
  MemoryDriverProc drv(dir, "memory");
  create_sandbox_via(drv.socket, "s1");
  WrapperProc frames(dir, spec_for("frames", drv.socket, "frames"));
  WrapperProc grpc(dir, spec_for("grpcrelay", drv.socket, "grpc"));
  const std::string msg = get_request("s1");
  const Headers h = grpc_request_headers(kGet);
  auto with = [&](const std::string& name, const std::string& value) {
    Headers out = h;
    bool found = false;
    for (auto& p : out) {
      if (p.first == name) p.second = value, found = true;
    }
    if (!found) out.emplace_back(name, value);
    return out;
  };
  Headers no_te;
  for (auto& p : h) {
    if (p.first != "te") no_te.push_back(p);
  }
  struct Attack {
    std::string name;
    Headers headers;
    std::optional<std::string> body;
    bool end = true;
    std::string expect;  // the answer both relays give
  };
  const std::string parse_error = "13 Unable to parse request";
  const std::string served = "0 [s1]";
  std::vector<Attack> attacks = {
      {"one message", h, grpc_frame(msg), true, served},
      {"no message", h, std::nullopt, true, parse_error},
      {"a zero-length message", h, grpc_frame(""), true, "5 sandbox \"\" not found"},
      {"two messages", h, grpc_frame(msg) + grpc_frame(get_request("other")), true, served},
      {"a message cut short", h, grpc_frame(msg).substr(0, 8), true, parse_error},
      {"part of a prefix", h, std::string("\0\0\0", 3), true, parse_error},
      {"a 4 GiB prefix", h, std::string("\0\xff\xff\xff\xff", 5) + msg, true, parse_error},
      {"the compressed flag, no encoding", h, grpc_frame(msg, 1), true, served},
      {"the compressed flag, identity", with("grpc-encoding", "identity"), grpc_frame(msg, 1), true, served},
      {"a message, the caller's side left open", h, grpc_frame(msg), false, served},
      {"no te", no_te, grpc_frame(msg), true, "2 Missing :te header"},
      {"grpc-timeout 99999999H", with("grpc-timeout", "99999999H"), grpc_frame(msg), true, served},
      {"grpc-timeout 2562048H", with("grpc-timeout", "2562048H"), grpc_frame(msg), true, served},
      {"grpc-timeout 99999999M", with("grpc-timeout", "99999999M"), grpc_frame(msg), true, served},
  };
  REQUIRE(ask(frames.socket, h, grpc_frame(msg)) == served);  // the delegate connection is made
  const size_t fds = fd_count(frames.proc->pid());
  for (auto& a : attacks) {
    INFO(a.name);
    std::string f = ask(frames.socket, a.headers, a.body, a.end);
    std::string g = ask(grpc.socket, a.headers, a.body, a.end);
    CHECK(f == g);
    CHECK(f == a.expect);
  }
  CHECK(wait_for([&] { return fd_count(frames.proc->pid()) <= fds; }));
  // A caller that never ends its side: once answered, its stream is reset
  // with NO_ERROR (so the call is over and logged), as gRPC's server does.
  for (const std::string* socket : {&frames.socket, &grpc.socket}) {
    INFO(*socket);
    RawClient c(*socket);
    int32_t id = c.request(h, grpc_frame(get_request("side-left-open")), false);
    c.exchange({id}, std::chrono::seconds(8));
    CHECK(c.answer(id).closed);
    CHECK(c.answer(id).rst == NGHTTP2_NO_ERROR);
    CHECK(c.answer(id).status() == "5 sandbox \"side-left-open\" not found");
  }
  CHECK(wait_for([&] { return frames.proc->log().find("\"sandbox_id\":\"side-left-open\"") != std::string::npos; }));
}

// A delegate breaking gRPC's rules, each answer compared with what the
// gRPC path makes of it. The frame relay used to answer UNAVAILABLE where
// gRPC's client sends the call again (GOAWAY below the call's stream: the
// delegate never saw it), INTERNAL for a reply with the compressed flag and
// no encoding (gRPC ignores the flag), and INTERNAL "Received RST_STREAM"
// for a header block past its 64 KiB limit (gRPC: RESOURCE_EXHAUSTED).
TEST_CASE("frame attack: a delegate that breaks gRPC's rules gets the gRPC path's answers",
          "[e2e][frames][attack][parity]") {
  TempDir dir;
  std::atomic<int> refusals{0};
  using Conn = FakeDelegate::Conn;
  FakeDelegate fake(dir.file("fake.sock"), [](Conn& c, int32_t s) { c.ok(s, sandbox_reply("s")); });
  WrapperProc frames(dir, spec_for("frames", dir.file("fake.sock"), "frames"));
  WrapperProc grpc(dir, spec_for("grpcrelay", dir.file("fake.sock"), "grpc"));
  const Headers okh = Conn::ok_headers();
  const Headers ok_trailers{{"grpc-status", "0"}};
  auto big = [](Headers h) {
    for (int i = 0; i < 10; i++) h.emplace_back("x-big-" + std::to_string(i), std::string(10000, 'h'));
    return h;
  };
  struct Mode {
    std::string name;
    FakeDelegate::Answer answer;
    std::string expect;
  };
  std::vector<Mode> modes = {
      {"a plain answer", [](Conn& c, int32_t s) { c.ok(s, sandbox_reply("s")); }, "0  [s]"},
      {"GOAWAY below the call, once",
       [&](Conn& c, int32_t s) {
         if (refusals-- > 0) return (void)nghttp2_submit_goaway(c.session, 0, 0, NGHTTP2_NO_ERROR, nullptr, 0);
         c.ok(s, sandbox_reply("s"));
       },
       "0  [s]"},
      {"GOAWAY below the call and the socket closed, once",
       [&](Conn& c, int32_t s) {
         if (refusals-- > 0) {
           nghttp2_submit_goaway(c.session, 0, 0, NGHTTP2_NO_ERROR, nullptr, 0);
           c.flush();
           c.dead = true;
           return;
         }
         c.ok(s, sandbox_reply("s"));
       },
       "0  [s]"},
      {"GOAWAY below the call, every time",
       [&](Conn& c, int32_t) { nghttp2_submit_goaway(c.session, 0, 0, NGHTTP2_NO_ERROR, nullptr, 0); },
       "14 delegate \"memory\" is unavailable: GOAWAY received []"},
      {"RST_STREAM REFUSED_STREAM (not retried by gRPC either)",
       [&](Conn& c, int32_t s) { nghttp2_submit_rst_stream(c.session, 0, s, NGHTTP2_REFUSED_STREAM); },
       "14 Received RST_STREAM with error code 7 []"},
      {"the compressed flag without an encoding",
       [&](Conn& c, int32_t s) { c.respond(s, okh, grpc_frame(sandbox_reply("s"), 1), ok_trailers); }, "0  [s]"},
      {"100 KiB of headers",
       [&](Conn& c, int32_t s) { c.respond(s, big(okh), grpc_frame(sandbox_reply("s")), ok_trailers); },
       "8 received initial metadata size exceeds limit []"},
      {"100 KiB of trailers",
       [&](Conn& c, int32_t s) { c.respond(s, okh, grpc_frame(sandbox_reply("s")), big(ok_trailers)); },
       "8 received initial metadata size exceeds limit []"},
      {"HTTP 503",
       [&](Conn& c, int32_t s) {
         c.headers(s, {{":status", "503"}}, true);
       },
       "14 Received http2 header with status: 503 []"},
      {"HTTP 500 with a body",
       [&](Conn& c, int32_t s) {
         c.respond(s, {{":status", "500"}, {"content-type", "text/plain"}}, "oops", {});
       },
       "2 Received http2 header with status: 500 []"},
      {"content-type text/html",
       [&](Conn& c, int32_t s) {
         c.respond(s, {{":status", "200"}, {"content-type", "text/html"}}, grpc_frame(sandbox_reply("s")), ok_trailers);
       },
       "0  [s]"},
      {"a trailers-only error",
       [&](Conn& c, int32_t s) {
         c.headers(s, {{":status", "200"}, {"grpc-status", "5"}, {"grpc-message", "x%20y"}}, true);
       },
       "5 x y []"},
      {"RST_STREAM INTERNAL_ERROR after headers",
       [&](Conn& c, int32_t s) {
         c.headers(s, okh, false);
         nghttp2_submit_rst_stream(c.session, 0, s, NGHTTP2_INTERNAL_ERROR);
       },
       "13 Received RST_STREAM with error code 2 []"},
  };
  for (auto& m : modes) {
    INFO(m.name);
    fake.set_answer(m.answer);
    refusals = 1;
    const int before = fake.calls();
    std::string f = get_status(frames.socket, "frames");
    const int frame_calls = fake.calls() - before;
    refusals = 1;
    std::string g = get_status(grpc.socket, "grpcrelay");
    CHECK(f == g);
    CHECK(f == m.expect);
    if (m.name.find(", once") != std::string::npos) CHECK(frame_calls == 2);  // sent again, once
    if (m.name.find("every time") != std::string::npos) CHECK(frame_calls == 2);
  }
  // The delegate gets a request as one plain message even when the caller
  // set the compressed flag or sent a second one.
  fake.set_answer([](Conn& c, int32_t s) { c.ok(s, sandbox_reply("s")); });
  for (const std::string& body :
       {grpc_frame(get_request("s"), 1), grpc_frame(get_request("s")) + grpc_frame(get_request("t"))}) {
    CHECK(ask(frames.socket, grpc_request_headers(kGet), body) == "0 [s]");
    CHECK(fake.last_request() == grpc_frame(get_request("s")));
  }
  // The caller gets the reply with the flag cleared, as gRPC's server
  // sends it (a tonic caller refuses a compressed message without an
  // encoding).
  fake.set_answer([&](Conn& c, int32_t s) { c.respond(s, okh, grpc_frame(sandbox_reply("s"), 1), ok_trailers); });
  CHECK(ask(frames.socket, grpc_request_headers(kGet), grpc_frame(get_request("s"))) == "0 [s]");
}

// Calls a gateway abandons in every way it can: reset right after the
// headers, reset after ending its side, thousands left open when the
// connection goes. None may stay behind: not a socket, and not a call the
// shutdown grace would wait for (the wrapper exits at once on SIGTERM).
TEST_CASE("frame attack: abandoned calls leave no socket and no call behind", "[e2e][frames][attack]") {
  TempDir dir;
  MemoryDriverProc drv(dir, "memory", {"--delay", "GetSandbox=300"});
  WrapperSpec spec = spec_for("frames", drv.socket, "frames");
  spec.extra_toml += "shutdown_grace_ms = 20000\n";
  WrapperProc w(dir, spec);
  const pid_t pid = w.proc->pid();
  const Headers h = grpc_request_headers(kGet);
  const std::string msg = grpc_frame(get_request("none"));
  REQUIRE(ask(w.socket, h, msg) == "5 sandbox \"none\" not found");
  const size_t fds = fd_count(pid);
  {
    RawClient c(w.socket);
    std::vector<int32_t> ids;
    for (int i = 0; i < 200; i++) {
      int32_t headers_only = c.request(h, std::nullopt, false);
      int32_t half_closed = c.request(h, msg);
      c.flush();
      nghttp2_submit_rst_stream(c.session(), 0, headers_only, NGHTTP2_CANCEL);
      if (i % 2) nghttp2_submit_rst_stream(c.session(), 0, half_closed, NGHTTP2_CANCEL);
      ids.push_back(half_closed);
    }
    c.exchange(ids, std::chrono::seconds(20));
    for (int32_t id : ids) CHECK(c.answer(id).closed);
  }
  for (int round = 0; round < 3; round++) {
    RawClient c(w.socket);
    for (int i = 0; i < 3000; i++) {
      c.request(h, msg.substr(0, 7), false);  // a message that never ends
      c.request(h, msg, false);               // a call whose caller never ends its side
      if (i % 200 == 0) c.flush();
    }
    c.exchange({}, std::chrono::milliseconds(500));
  }
  CHECK(ask(w.socket, h, msg) == "5 sandbox \"none\" not found");
  CHECK(wait_for([&] { return fd_count(pid) <= fds; }));
  INFO("fds before " << fds << " after " << fd_count(pid));
  auto t0 = Clock::now();
  w.proc->signal(SIGTERM);
  CHECK(w.proc->wait(std::chrono::seconds(15)) == 0);
  CHECK(Clock::now() - t0 < std::chrono::seconds(10));
}
