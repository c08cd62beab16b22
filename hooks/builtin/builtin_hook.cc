#include "hooks/builtin/builtin_hook.h"

#include "plan/sandbox_json.h"

#include <exception>

namespace owrap {

void SyncBuiltinHook::invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options,
                             HookDone done) {
  HookOutcome outcome;
  try {
    outcome = evaluate(*request);
  } catch (const std::exception& e) {
    outcome = HookOutcome::failed(grpc::StatusCode::INTERNAL, std::string("builtin hook error: ") + e.what());
  }
  done(std::move(outcome));
}

PhaseSet phases_of(std::initializer_list<HookPhase> phases) {
  PhaseSet set;
  for (HookPhase p : phases) set.set(static_cast<size_t>(p));
  return set;
}

bool is_phase(const hookpb::HookRequest& request, HookPhase phase) {
  return request.phase() == phase_name(phase);
}

hookpb::HookResponse allow_response() {
  hookpb::HookResponse r;
  r.set_allowed(true);
  return r;
}

hookpb::HookResponse deny_response(std::string_view code, std::string reason) {
  hookpb::HookResponse r;
  r.set_allowed(false);
  r.set_status_code(std::string(code));
  r.set_reason(std::move(reason));
  return r;
}

nlohmann::json sandbox_json(const computepb::DriverSandbox& sandbox) {
  auto doc = message_to_json(sandbox);
  return doc ? std::move(doc.value()) : nlohmann::json::object();
}

namespace {

// Built in place: a Value returned and copied into its parent per level
// would copy every subtree once per level above it.
void fill_proto_value(const nlohmann::json& value, google::protobuf::Value& out) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
    case nlohmann::json::value_t::binary:
      out.set_null_value(google::protobuf::NULL_VALUE);
      break;
    case nlohmann::json::value_t::boolean:
      out.set_bool_value(value.get<bool>());
      break;
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      out.set_number_value(value.get<double>());
      break;
    case nlohmann::json::value_t::string:
      out.set_string_value(value.get_ref<const std::string&>());
      break;
    case nlohmann::json::value_t::array: {
      auto* list = out.mutable_list_value();
      list->mutable_values()->Reserve(static_cast<int>(value.size()));
      for (const auto& v : value) fill_proto_value(v, *list->add_values());
      break;
    }
    case nlohmann::json::value_t::object: {
      auto* fields = out.mutable_struct_value()->mutable_fields();
      for (const auto& [k, v] : value.get_ref<const nlohmann::json::object_t&>()) fill_proto_value(v, (*fields)[k]);
      break;
    }
  }
}

}  // namespace

google::protobuf::Value to_proto_value(const nlohmann::json& value) {
  google::protobuf::Value out;
  fill_proto_value(value, out);
  return out;
}

const toml::table& config_table(const HookSpec& spec) {
  static const toml::table empty;
  return spec.config_toml ? *spec.config_toml : empty;
}

Error config_error(const std::vector<std::string>& errors) {
  std::string all;
  for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
  return Error{all};
}

}  // namespace owrap
