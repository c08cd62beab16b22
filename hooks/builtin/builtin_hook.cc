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

nlohmann::json sandbox_json_along(const computepb::DriverSandbox& sandbox,
                                  const std::vector<std::vector<std::string>>& pointers) {
  using google::protobuf::FieldDescriptor;
  nlohmann::json view = nlohmann::json::object();
  for (const auto& pointer : pointers) {
    const google::protobuf::Message* message = &sandbox;
    nlohmann::json* node = &view;
    for (size_t i = 0; i < pointer.size(); i++) {
      const FieldDescriptor* field = message->GetDescriptor()->FindFieldByName(pointer[i]);
      if (!field) return sandbox_json(sandbox);
      const google::protobuf::Reflection* r = message->GetReflection();
      const bool last = i + 1 == pointer.size();
      if (last && field->is_map() && field->message_type()->map_value()->type() == FieldDescriptor::TYPE_STRING) {
        if (r->FieldSize(*message, field) == 0) break;
        auto& out = (*node)[field->name()] = nlohmann::json::object();
        for (int e = 0, n = r->FieldSize(*message, field); e < n; e++) {
          const google::protobuf::Message& entry = r->GetRepeatedMessage(*message, field, e);
          const google::protobuf::Reflection* er = entry.GetReflection();
          const auto* d = entry.GetDescriptor();
          out[er->GetString(entry, d->map_key())] = er->GetString(entry, d->map_value());
        }
        break;
      }
      if (field->is_repeated() || field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return sandbox_json(sandbox);
      if (!r->HasField(*message, field)) break;
      message = &r->GetMessage(*message, field);
      if (last) {
        auto converted = message_to_json(*message);
        if (!converted) return sandbox_json(sandbox);
        (*node)[field->name()] = std::move(converted.value());
        break;
      }
      node = &(*node)[field->name()];
      if (node->is_null()) *node = nlohmann::json::object();
    }
  }
  return view;
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
