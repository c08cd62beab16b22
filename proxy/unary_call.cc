#include "proxy/unary_call.h"

namespace owrap {

AsyncComputeDriver::AsyncComputeDriver() {
  for (const auto& info : all_rpcs()) {
    if (!info.server_streaming) MarkMethodRaw(method_index(info.rpc));
  }
}

int AsyncComputeDriver::method_index(Rpc rpc) {
  static const auto* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(v1::ComputeDriver::service_full_name());
  return service->FindMethodByName(std::string(rpc_name(rpc)))->index();
}

grpc::Status redact_status(const grpc::Status& s, const std::string& secret) {
  return grpc::Status(s.error_code(), Logger::redact(s.error_message(), secret), s.error_details());
}

void log_call(const CallState& ctx, std::chrono::steady_clock::time_point start, const grpc::Status& s) {
  const LogLevel level = s.ok() ? LogLevel::kInfo : LogLevel::kWarn;
  if (!Logger::instance().enabled(level)) return;
  auto latency = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  nlohmann::json fields = {
      {"rpc", rpc_name(ctx.rpc)}, {"latency_us", latency.count()}, {"status", status_code_name(s.error_code())}};
  if (!ctx.sandbox_id.empty()) fields["sandbox_id"] = ctx.sandbox_id;
  if (!s.ok()) fields["error"] = Logger::redact(s.error_message(), ctx.secret);
  Logger::instance().write(level, "rpc", std::move(fields));
}

}  // namespace owrap
