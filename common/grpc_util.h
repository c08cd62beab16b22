// Helpers for relaying a call: status-code names, and which metadata a proxy
// may copy between a server call and a client call (never the transport's own
// headers, which gRPC sets itself).
#pragma once

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

std::string_view status_code_name(grpc::StatusCode code);
std::optional<grpc::StatusCode> parse_status_code(std::string_view name);

// True for metadata keys gRPC owns (":path", "grpc-*", "content-type", ...).
bool is_transport_metadata(std::string_view key);
// True for a binary key ("...-bin"), whose value travels base64-encoded.
bool is_binary_metadata(std::string_view key);

// How many wrappers a call has passed: each wrapper reads it from the
// request metadata and sends it on one higher, so a loop of wrappers (one
// pointed at itself, or A -> B -> A) ends instead of multiplying calls.
inline constexpr std::string_view kHopsMetadata = "openshell-wrapper-hops";
inline constexpr int kMaxWrapperHops = 16;
// The count the caller sent (0 when absent or not a number).
int wrapper_hops(const grpc::ServerContextBase& call);
// FAILED_PRECONDITION naming the loop and the limit once a call has passed
// kMaxWrapperHops wrappers; OK before.
grpc::Status check_wrapper_hops(const grpc::ServerContextBase& call, std::string_view wrapper_name);
// The same for a count read elsewhere (the frame relay's request headers).
grpc::Status check_hop_count(int hops, std::string_view wrapper_name);

// The caller's W3C `traceparent` metadata, or "" (handed on to hooks).
std::string traceparent_of(const grpc::ServerContextBase& call);

// Caller's metadata (traceparent, custom keys, -bin keys) onto the delegate
// call, with the hop count one higher.
void copy_request_metadata(const grpc::ServerContextBase& from, grpc::ClientContext& to);
// The delegate's initial and trailing metadata back onto the server call;
// a streaming relay copies each as it arrives.
// A value that carries one of `secrets` (values of the request's
// secret-marked fields, a delegate echoing them) is scrubbed, or dropped
// for binary (-bin) keys, whose bytes cannot be edited safely.
void copy_response_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to,
                            const std::vector<std::string>* secrets = nullptr);
// One response metadata entry as the relay passes it on: nullopt when it
// must not leave the process (a transport header, or a -bin value carrying
// a secret), else the value with any secret scrubbed.
std::optional<std::string> relayable_response_metadata(std::string_view key, std::string_view value,
                                                       const std::vector<std::string>* secrets);
void copy_initial_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to,
                           const std::vector<std::string>* secrets = nullptr);
void copy_trailing_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to,
                            const std::vector<std::string>* secrets = nullptr);

// google.rpc.Status{code, message}, encoded: error details that say only
// what the status says.
std::string encode_rpc_status(grpc::StatusCode code, std::string_view message);

// "250ms", "5s", "2m", or a bare number of seconds.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace owrap
