#include "common/grpc_util.h"

#include "common/secrets.h"

#include <array>
#include <charconv>
#include <utility>

namespace owrap {

namespace {
constexpr std::array<std::pair<grpc::StatusCode, std::string_view>, 17> kCodes{{
    {grpc::OK, "OK"},
    {grpc::CANCELLED, "CANCELLED"},
    {grpc::UNKNOWN, "UNKNOWN"},
    {grpc::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
    {grpc::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
    {grpc::NOT_FOUND, "NOT_FOUND"},
    {grpc::ALREADY_EXISTS, "ALREADY_EXISTS"},
    {grpc::PERMISSION_DENIED, "PERMISSION_DENIED"},
    {grpc::RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
    {grpc::FAILED_PRECONDITION, "FAILED_PRECONDITION"},
    {grpc::ABORTED, "ABORTED"},
    {grpc::OUT_OF_RANGE, "OUT_OF_RANGE"},
    {grpc::UNIMPLEMENTED, "UNIMPLEMENTED"},
    {grpc::INTERNAL, "INTERNAL"},
    {grpc::UNAVAILABLE, "UNAVAILABLE"},
    {grpc::DATA_LOSS, "DATA_LOSS"},
    {grpc::UNAUTHENTICATED, "UNAUTHENTICATED"},
}};
}  // namespace

std::string_view status_code_name(grpc::StatusCode code) {
  for (auto& [c, n] : kCodes)
    if (c == code) return n;
  return "UNKNOWN";
}

std::optional<grpc::StatusCode> parse_status_code(std::string_view name) {
  for (auto& [c, n] : kCodes)
    if (n == name) return c;
  return std::nullopt;
}

bool is_transport_metadata(std::string_view key) {
  if (key.empty() || key.front() == ':') return true;
  if (key.rfind("grpc-", 0) == 0) return true;
  return key == "content-type" || key == "te" || key == "user-agent" || key == "host" || key == "accept-encoding" ||
         key == "content-encoding" || key == "lb-token";
}

bool is_binary_metadata(std::string_view key) {
  return key.size() > 4 && key.substr(key.size() - 4) == "-bin";
}

int wrapper_hops(const grpc::ServerContextBase& call) {
  auto it = call.client_metadata().find(grpc::string_ref(kHopsMetadata.data(), kHopsMetadata.size()));
  if (it == call.client_metadata().end()) return 0;
  int hops = 0;
  for (char c : std::string_view(it->second.data(), it->second.size())) {
    if (c < '0' || c > '9') return 0;
    hops = std::min(hops * 10 + (c - '0'), 1000000);
  }
  return hops;
}

grpc::Status check_wrapper_hops(const grpc::ServerContextBase& call, std::string_view wrapper_name) {
  return check_hop_count(wrapper_hops(call), wrapper_name);
}

grpc::Status check_hop_count(int hops, std::string_view wrapper_name) {
  if (hops < kMaxWrapperHops) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "wrapper \"" + std::string(wrapper_name) + "\" refuses a call that has already passed " +
                          (hops >= 1000000 ? std::string("at least 1000000") : std::to_string(hops)) +
                          " wrappers (limit " + std::to_string(kMaxWrapperHops) +
                          "): the wrappers form a loop; check each wrapper's delegate.endpoint");
}

void copy_request_metadata(const grpc::ServerContextBase& from, grpc::ClientContext& to) {
  for (const auto& [k, v] : from.client_metadata()) {
    std::string_view key(k.data(), k.size());
    if (is_transport_metadata(key) || key == kHopsMetadata) continue;
    to.AddMetadata(std::string(key), std::string(v.data(), v.size()));
  }
  to.AddMetadata(std::string(kHopsMetadata), std::to_string(wrapper_hops(from) + 1));
}

std::optional<std::string> relayable_response_metadata(std::string_view key, std::string_view value,
                                                       const std::vector<std::string>* secrets) {
  if (is_transport_metadata(key)) return std::nullopt;
  std::string v(value);
  if (secrets != nullptr && !secrets->empty()) {
    std::string scrubbed = redact_secrets(v, *secrets);
    if (scrubbed != v) {
      if (is_binary_metadata(key)) return std::nullopt;
      v = std::move(scrubbed);
    }
  }
  return v;
}

namespace {

// Adds one response metadata entry unless it must not leave the process.
template <class Add>
void copy_entry(std::string_view key, std::string_view value, const std::vector<std::string>* secrets, Add add) {
  if (auto v = relayable_response_metadata(key, value, secrets)) add(std::string(key), std::move(*v));
}

void put_varint(std::string& out, uint64_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out.push_back(static_cast<char>(v ? (b | 0x80) : b));
  } while (v);
}

}  // namespace

void copy_initial_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to,
                           const std::vector<std::string>* secrets) {
  for (const auto& [k, v] : from.GetServerInitialMetadata()) {
    copy_entry(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()), secrets,
               [&](std::string key, std::string value) { to.AddInitialMetadata(key, value); });
  }
}

void copy_trailing_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to,
                            const std::vector<std::string>* secrets) {
  for (const auto& [k, v] : from.GetServerTrailingMetadata()) {
    copy_entry(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()), secrets,
               [&](std::string key, std::string value) { to.AddTrailingMetadata(key, value); });
  }
}

void copy_response_metadata(const grpc::ClientContext& from, grpc::ServerContextBase& to,
                            const std::vector<std::string>* secrets) {
  copy_initial_metadata(from, to, secrets);
  copy_trailing_metadata(from, to, secrets);
}

std::string encode_rpc_status(grpc::StatusCode code, std::string_view message) {
  std::string out;
  out.push_back(0x08);  // field 1, varint: code
  put_varint(out, static_cast<uint32_t>(code));
  out.push_back(0x12);  // field 2, length-delimited: message
  put_varint(out, message.size());
  out.append(message);
  return out;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double value = 0;
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) i++;
  if (i == 0) return std::nullopt;
  try {
    value = std::stod(std::string(text.substr(0, i)));
  } catch (...) {
    return std::nullopt;
  }
  std::string_view unit = text.substr(i);
  double ms;
  if (unit.empty() || unit == "s")
    ms = value * 1000;
  else if (unit == "ms")
    ms = value;
  else if (unit == "m")
    ms = value * 60000;
  else
    return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

std::string traceparent_of(const grpc::ServerContextBase& call) {
  const auto& md = call.client_metadata();
  auto it = md.find("traceparent");
  if (it == md.end()) return "";
  // A trace id is 55 characters; anything much longer is not one.
  if (it->second.size() > 256) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace owrap
