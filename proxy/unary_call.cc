#include "proxy/unary_call.h"

#include <array>

namespace owrap {

AsyncComputeDriver::AsyncComputeDriver() {
  for (const auto& info : all_rpcs()) {
    if (!info.server_streaming) MarkMethodRaw(method_index(info.rpc));
  }
}

int AsyncComputeDriver::method_index(Rpc rpc) {
  // Looked up once: every request a listener puts up asks for it.
  static const std::array<int, kRpcCount> kIndex = [] {
    const auto* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(v1::ComputeDriver::service_full_name());
    std::array<int, kRpcCount> index{};
    for (const auto& info : all_rpcs()) {
      index[static_cast<size_t>(info.rpc)] = service->FindMethodByName(std::string(info.name))->index();
    }
    return index;
  }();
  return kIndex[static_cast<size_t>(rpc)];
}

RawDelegateMethods::RawDelegateMethods(const std::shared_ptr<grpc::Channel>& channel) : channel_(channel) {
  methods_.reserve(kRpcCount);
  // The table's paths are string literals: the registered names outlive the channel.
  for (const auto& info : all_rpcs()) {
    methods_.emplace_back(info.method_path.data(), grpc::internal::RpcMethod::NORMAL_RPC, channel_);
  }
}

std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>> RawDelegateMethods::prepare(
    Rpc rpc, grpc::ClientContext* ctx, const grpc::ByteBuffer& request, grpc::CompletionQueue* cq) const {
  // What a generated stub's PrepareAsync does, with bytes for messages.
  return std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::ByteBuffer>>(
      grpc::internal::ClientAsyncResponseReaderHelper::Create<grpc::ByteBuffer>(
          channel_.get(), cq, methods_[static_cast<size_t>(rpc)], ctx, request));
}

bool parse_bytes(grpc::ByteBuffer& bytes, google::protobuf::MessageLite& message) {
  grpc::ProtoBufferReader reader(&bytes);
  return reader.status().ok() && message.ParseFromZeroCopyStream(&reader);
}

grpc::Status redact_status(const grpc::Status& s, const std::vector<std::string>& secrets) {
  std::string message = redact_secrets(s.error_message(), secrets);
  std::string details = s.error_details();
  // The details are a serialized google.rpc.Status (tonic and grpc-go copy
  // the message into it): bytes cannot be edited in place, so details that
  // carry a secret are replaced by ones that say what the status says.
  if (!details.empty() && redact_secrets(details, secrets) != details) {
    details = encode_rpc_status(s.error_code(), message);
  }
  return grpc::Status(s.error_code(), message, details);
}

LogLine call_log_line(const CallLogEntry& entry, std::chrono::microseconds latency, const grpc::Status& s,
                      LogLevel level) {
  LogLine line(level, "rpc");
  line.add("rpc", entry.rpc).add("latency_us", latency.count()).add("status", status_code_name(s.error_code()));
  if (!entry.sandbox_id.empty()) line.add("sandbox_id", entry.sandbox_id);
  if (entry.passthrough) line.add("passthrough", true);
  if (!entry.delivered) line.add("delivered", false);
  if (!s.ok()) {
    line.add("error", entry.secrets ? redact_secrets(s.error_message(), *entry.secrets) : s.error_message());
  }
  return line;
}

void log_call(const CallLogEntry& entry, std::chrono::steady_clock::time_point start, const grpc::Status& s) {
  const LogLevel level = s.ok() && entry.delivered ? LogLevel::kInfo : LogLevel::kWarn;
  if (!Logger::instance().enabled(level)) return;
  auto latency = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  Logger::instance().write(call_log_line(entry, latency, s, level));
}

grpc::Status admit_call(const grpc::ServerContextBase& call, const std::string& wrapper_name,
                        const CallTracker& tracker) {
  return admit_call(wrapper_hops(call), wrapper_name, tracker);
}

grpc::Status admit_call(int hops, const std::string& wrapper_name, const CallTracker& tracker) {
  if (grpc::Status s = check_hop_count(hops, wrapper_name); !s.ok()) return s;
  if (tracker.draining()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "wrapper \"" + wrapper_name + "\" is shutting down");
  }
  return grpc::Status::OK;
}

}  // namespace owrap
