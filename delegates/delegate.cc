#include "delegates/delegate.h"

#include "common/grpc_util.h"
#include "common/log.h"
#include "compute_driver.grpc.pb.h"
#include "delegates/delegate_config.h"
#include "delegates/endpoint_delegate.h"
#include "delegates/managed_delegate.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <thread>

namespace owrap {

std::shared_ptr<grpc::Channel> make_delegate_channel(const std::string& target) {
  grpc::ChannelArguments args;
  // A restarted delegate must be reachable again within a fraction of a
  // second, not after gRPC's default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  args.SetMaxSendMessageSize(64 * 1024 * 1024);
  // Per-call bookkeeping nobody reads here (channelz counters show in every
  // relayed call's profile).
  args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

bool wait_until_answers(const std::shared_ptr<grpc::Channel>& channel, std::chrono::milliseconds timeout,
                        const std::function<bool()>& give_up, std::string* capabilities) {
  auto stub = openshell::compute::v1::ComputeDriver::NewStub(channel);
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (give_up && give_up()) return false;
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    // A probe is a call like any other: through a loop of wrappers it must
    // end at the hop limit too.
    ctx.AddMetadata(std::string(kHopsMetadata), "1");
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
    openshell::compute::v1::GetCapabilitiesRequest req;
    openshell::compute::v1::GetCapabilitiesResponse resp;
    grpc::Status s = stub->GetCapabilities(&ctx, req, &resp);
    // Any answer from the driver itself (even an error) proves it serves.
    if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED && s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      if (capabilities) *capabilities = resp.driver_name() + " " + resp.driver_version();
      return true;
    }
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string unavailable_message(const Delegate& d, const std::string& reason) {
  return "delegate \"" + d.name() + "\" is unavailable: " + reason;
}

grpc::Status unavailable_delegate_status(const Delegate& d) {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, unavailable_message(d, d.unavailable_reason()));
}

grpc::Status name_unavailable_delegate(const grpc::Status& s, const Delegate& d) {
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
  if (d.available() && d.channel()->GetState(false) == GRPC_CHANNEL_READY) return s;
  std::string reason = d.available() ? s.error_message() : d.unavailable_reason() + " (" + s.error_message() + ")";
  return grpc::Status(s.error_code(), unavailable_message(d, reason), s.error_details());
}

bool never_connected(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE &&
         s.error_message().find("failed to connect to all addresses") != std::string::npos;
}

grpc::Status unparsable_reply_status(const Delegate& d, std::string_view method, std::string_view type) {
  return grpc::Status(grpc::StatusCode::INTERNAL, "delegate \"" + d.name() + "\" sent a " + std::string(method) +
                                                      " reply that does not parse as " + std::string(type));
}

std::unique_ptr<Delegate> make_delegate(const DelegateOptions& options) {
  if (!options.endpoint.empty()) return std::make_unique<EndpointDelegate>(options);
  return std::make_unique<ManagedDelegate>(options);
}

EndpointDelegate::EndpointDelegate(DelegateOptions options)
    : options_(std::move(options)), channel_(make_delegate_channel(options_.endpoint)) {}

std::string EndpointDelegate::socket_path() const {
  return endpoint_socket_path(options_.endpoint);
}

Result<bool> EndpointDelegate::start(const std::function<bool()>& cancelled) {
  std::string caps;
  bool answers = wait_until_answers(channel_, options_.ready_timeout, cancelled, &caps);
  if (cancelled && cancelled()) return Error{"start-up interrupted"};
  if (answers) {
    log_info("delegate answers", {{"delegate", options_.name}, {"endpoint", options_.endpoint}, {"driver", caps}});
  } else {
    // Somebody else runs it: serve anyway, calls fail fast until it is back.
    log_warn("delegate does not answer yet; serving anyway",
             {{"delegate", options_.name}, {"endpoint", options_.endpoint}});
  }
  return true;
}

}  // namespace owrap
