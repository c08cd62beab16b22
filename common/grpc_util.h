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

namespace owrap {

std::string_view status_code_name(grpc::StatusCode code);
std::optional<grpc::StatusCode> parse_status_code(std::string_view name);

// True for metadata keys gRPC owns (":path", "grpc-*", "content-type", ...).
bool is_transport_metadata(std::string_view key);

// Caller's metadata (traceparent, custom keys, -bin keys) onto the delegate call.
void copy_request_metadata(const grpc::ServerContextBase& from, grpc::ClientContext& to);
// The delegate's initial and trailing metadata back onto the server call;
// a streaming relay copies each as it arrives.
void copy_response_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to);
void copy_initial_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to);
void copy_trailing_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to);

// "250ms", "5s", "2m", or a bare number of seconds.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace owrap
