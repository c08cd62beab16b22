// The base driver the wrapper forwards to. Either a process the wrapper
// launches and supervises (ManagedDelegate) or a socket somebody else runs
// (EndpointDelegate). A wrapper is itself a valid delegate of another.
#pragma once

#include "common/result.h"

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace owrap {

class Delegate {
 public:
  virtual ~Delegate() = default;
  // The base driver's driver_config key, used in messages and logs.
  virtual const std::string& name() const = 0;
  virtual std::shared_ptr<grpc::Channel> channel() const = 0;
  // The Unix socket the delegate serves on (the frame relay connects there
  // itself); may change only across a restart.
  virtual std::string socket_path() const = 0;
  // False while a managed process is down or restarting: calls fail fast.
  virtual bool available() const = 0;
  virtual std::string unavailable_reason() const = 0;
  // Blocks until the delegate answers GetCapabilities or the ready timeout
  // passes. A managed delegate that never becomes ready is an error.
  // `cancelled` is polled while waiting (a SIGTERM during start-up): once
  // it says true, start() returns an error promptly; stop() cleans up.
  virtual Result<bool> start(const std::function<bool()>& cancelled) = 0;
  virtual void stop(std::chrono::milliseconds grace) = 0;
};

struct DelegateOptions {
  std::string name;
  // managed: argv with {socket} and {pid} placeholders, plus env.
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  bool inherit_env = true;
  // endpoint: "unix:///path".
  std::string endpoint;
  std::chrono::milliseconds ready_timeout{30000};
  std::chrono::milliseconds restart_backoff_initial{200};
  std::chrono::milliseconds restart_backoff_max{30000};
  std::chrono::milliseconds stop_grace{10000};
  // managed: a GetCapabilities probe every liveness_interval (each allowed
  // liveness_timeout); liveness_failures failed probes in a row restart the
  // delegate. 0 failures turns the probe off.
  std::chrono::milliseconds liveness_interval{10000};
  std::chrono::milliseconds liveness_timeout{5000};
  int liveness_failures = 3;
  // Where the managed delegate's private runtime directory is created.
  std::string runtime_parent;
  // Used to name the runtime directory.
  std::string wrapper_name;
};

// A channel to a unix: target that reconnects quickly after a restart.
std::shared_ptr<grpc::Channel> make_delegate_channel(const std::string& target);

// Waits until `channel` answers GetCapabilities, up to `timeout`; `give_up`
// is polled between attempts.
bool wait_until_answers(const std::shared_ptr<grpc::Channel>& channel, std::chrono::milliseconds timeout,
                        const std::function<bool()>& give_up, std::string* capabilities = nullptr);

std::unique_ptr<Delegate> make_delegate(const DelegateOptions& options);

// "delegate "<name>" is unavailable: <reason>".
std::string unavailable_message(const Delegate& d, const std::string& reason);
// UNAVAILABLE naming `d` and why it is down: what a call gets while it is.
grpc::Status unavailable_delegate_status(const Delegate& d);
// Rewrites a transport failure (the delegate never answered) so the caller
// learns which delegate is down; a status the delegate itself sent (its
// connection up) is kept.
grpc::Status name_unavailable_delegate(const grpc::Status& s, const Delegate& d);
// True for gRPC's own UNAVAILABLE when no connection to the delegate could
// be made for the call (the request never left). The channel's state after
// the call cannot tell: a delegate that died during the call leaves it idle
// too, and that request may well have been carried out.
bool never_connected(const grpc::Status& s);

// INTERNAL for a reply of `d` to `method` that does not parse as `type`.
grpc::Status unparsable_reply_status(const Delegate& d, std::string_view method, std::string_view type);

}  // namespace owrap
