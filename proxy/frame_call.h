// One unary call served by the frame relay: the gateway's stream in, the
// call pipeline (`CallRunner`: stages before, the delegate, stages after),
// the delegate's stream out, on the relay's thread. The frame relay's
// counterpart of `UnaryCall` (proxy/unary_call.h), with the same answers.
#pragma once

#include "call/rpc.h"
#include "proxy/frame_relay.h"
#include "proxy/h2_connection.h"

#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>

namespace owrap {

// What every call of the relay reaches, on the relay's thread.
struct RelayShared {
  RelayShared(boost::asio::io_context& io, const FrameRelayOptions& options) : io(io), options(options) {}
  boost::asio::io_context& io;
  const FrameRelayOptions& options;
  H2Flusher flusher;
  grpc::Server* server = nullptr;
  std::shared_ptr<H2Connection> delegate;
  bool stopping = false;

  // The connection to the delegate's socket, made on first use and again
  // after it is lost or the delegate sent GOAWAY; null (and `error` says
  // why) when the socket cannot be reached.
  std::shared_ptr<H2Connection> delegate_connection(std::string* error);
};

// The gateway connection a call's stream belongs to.
class CallOwner {
 public:
  virtual ~CallOwner() = default;
  virtual H2Connection& gateway() = 0;
  // The call's gateway stream closed and it has nothing left to do: it is
  // deleted once the event at hand is handled.
  virtual void retire(int32_t stream) = 0;
};

// A call of `rpc` (a unary RPC) on the gateway's `stream`, whose request
// headers are `headers`.
std::unique_ptr<H2StreamSink> make_frame_call(CallOwner& owner, RelayShared& shared, int32_t stream, Rpc rpc,
                                              const H2Headers& headers);

}  // namespace owrap
