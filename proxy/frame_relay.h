// The frame relay (`[wrapper] relay = "frames"`, the default): the
// gateway's connections are served by the wrapper's own HTTP/2 front, on one
// thread, instead of by gRPC's server.
//
//  * A unary RPC is a `FrameCall` (proxy/frame_call.h): the call pipeline
//    runs on the relay's thread and the delegate is called on the relay's
//    own HTTP/2 connection to its socket. An RPC no stage applies to
//    (GetSandbox, ListSandboxes, ...) is relayed as the bytes that came in,
//    both ways: no gRPC call object exists on either side, which is what
//    HAProxy does for a hop, plus the wrapper's checks.
//  * Every other stream (WatchSandboxes, unknown methods, a compressed
//    request) is a `PipedCall`: relayed stream for stream to the wrapper's
//    gRPC server over a socket pair per gateway connection, where the watch
//    hub, the generic relay and `UnaryCall` serve it as with
//    `relay = "grpc"`.
//
// A frame call keeps the gRPC path's behaviour: the same answers to a
// request that does not parse, a loop of wrappers, a draining wrapper, a
// delegate that is down or sends a reply that does not parse; metadata
// copied by the same rules; the caller's deadline and cancellation reach
// suspended stages and the delegate; one access-log line per call.
#pragma once

#include "call/rpc.h"
#include "common/io_thread.h"
#include "common/uds.h"

#include <grpcpp/server.h>

#include <functional>
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
  // The queue a call's grpc hooks start their invocations on (the wrapper's
  // completion queues, whose threads poll anyway); null: each hook's own.
  std::function<grpc::CompletionQueue*()> hook_queue;
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

  struct State;

 private:
  void start_connection(UniqueFd fd);

  FrameRelayOptions options_;
  IoThread io_;  // before state_: its connections' sockets need the loop
  std::unique_ptr<State> state_;
  bool stopped_ = false;
};

}  // namespace owrap
