// The frame relay (`[wrapper] relay = "frames"`, the default): the
// gateway's connections are served by the wrapper's own HTTP/2 front, on one
// thread, instead of by gRPC's server.
//
//  * A unary RPC no stage applies to (GetSandbox, ListSandboxes, ...; see
//    `FrameRelay::direct`) is a `DirectCall`: the request message is checked
//    and sent to the delegate's socket as it came, the reply checked and
//    sent back as it came. No gRPC call object exists on either side; this
//    is what HAProxy does for a hop, plus the wrapper's checks.
//  * Every other stream (CreateSandbox and the RPCs stages see, the watch,
//    unknown methods, compressed requests) is a `PipedCall`: relayed stream
//    for stream to the wrapper's gRPC server over a socket pair per gateway
//    connection, where the call pipeline runs as with `relay = "grpc"`.
//
// A direct call keeps the gRPC path's behaviour: the same answers to a
// request that does not parse, a loop of wrappers, a draining wrapper, a
// delegate that is down or sends a reply that does not parse; metadata
// copied by the same rules; the caller's deadline and cancellation reach
// the delegate; one access-log line per call.
#pragma once

#include "call/rpc.h"
#include "common/io_thread.h"
#include "common/uds.h"

#include <grpcpp/server.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

namespace owrap {

class CallTracker;
class Delegate;
class Pipeline;
class H2Connection;
class GatewayConnection;

struct FrameRelayOptions {
  std::string wrapper_name;
  Delegate& delegate;
  const Pipeline& pipeline;
  CallTracker& tracker;
};

class FrameRelay {
 public:
  explicit FrameRelay(FrameRelayOptions options);
  ~FrameRelay();
  FrameRelay(const FrameRelay&) = delete;
  FrameRelay& operator=(const FrameRelay&) = delete;

  // Where piped calls go. Connections adopted before it is known wait
  // (the acceptor starts with the server, before its pointer is returned).
  void set_server(grpc::Server* server);
  // Any thread (the acceptor's): serves a connection whose peer passed the
  // socket's checks.
  void adopt(UniqueFd fd);
  // Ends every connection (calls still running are cancelled, their
  // delegate streams reset) and joins the relay's thread. Idempotent.
  void stop();

  // Whether calls of `rpc` are relayed directly (unary, no stage applies,
  // no secret-marked field in the request).
  bool direct(Rpc rpc) const { return direct_[static_cast<size_t>(rpc)]; }
  // Live gateway connections (for tests and the log at stop).
  size_t connections() const;

  // Internal, for the relay's call objects (on the relay's thread).
  struct Shared;

 private:
  void start_connection(UniqueFd fd);

  FrameRelayOptions options_;
  std::array<bool, kRpcCount> direct_{};
  IoThread io_;  // before shared_: its connections' sockets need the loop
  std::unique_ptr<Shared> shared_;
  bool stopped_ = false;
};

}  // namespace owrap
