#include "common/secrets.h"

#include "common/message_fields.h"

#include "compute_driver.pb.h"
#include "options.pb.h"

#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <deque>
#include <shared_mutex>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace owrap {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// What a type needs looking at: its own secret fields, and the message
// fields whose type can lead to one. A type with neither is never walked.
struct Plan {
  std::vector<const FieldDescriptor*> secret;
  std::vector<std::pair<const FieldDescriptor*, const Plan*>> nested;
  bool empty() const { return secret.empty() && nested.empty(); }
};

// Plans keyed by descriptor address, built once for everything reachable
// from a type and kept for the process (generated descriptors live as long).
class PlanCache {
 public:
  static PlanCache& instance() {
    static PlanCache* cache = new PlanCache();  // never destroyed: usable at exit
    return *cache;
  }

  const Plan& plan(const Descriptor& type) {
    // Every completion-queue thread asks on every call: a thread-local
    // index keeps the shared lock off the common path.
    thread_local std::unordered_map<const Descriptor*, const Plan*> local;
    if (auto it = local.find(&type); it != local.end()) return *it->second;
    const Plan* found = nullptr;
    {
      std::shared_lock lock(mu_);
      if (auto it = plans_.find(&type); it != plans_.end()) found = it->second.get();
    }
    if (!found) {
      std::unique_lock lock(mu_);
      build(type);
      found = plans_.at(&type).get();
    }
    local.emplace(&type, found);
    return *found;
  }

 private:
  // Types can refer to themselves (Struct -> Value -> Struct), so "can lead
  // to a secret" is a fixed point over every type reachable from `root`,
  // not a depth-first answer.
  void build(const Descriptor& root) {
    std::vector<const Descriptor*> fresh;
    std::unordered_set<const Descriptor*> seen;
    std::deque<const Descriptor*> todo{&root};
    while (!todo.empty()) {
      const Descriptor* t = todo.front();
      todo.pop_front();
      if (plans_.count(t) || !seen.insert(t).second) continue;
      fresh.push_back(t);
      for (int i = 0; i < t->field_count(); i++) {
        if (const Descriptor* sub = t->field(i)->message_type()) todo.push_back(sub);
      }
    }
    std::unordered_set<const Descriptor*> tainted;
    auto leads_to_secret = [&](const Descriptor* t) {
      if (tainted.count(t)) return true;
      auto it = plans_.find(t);
      return it != plans_.end() && !it->second->empty();
    };
    for (bool changed = true; changed;) {
      changed = false;
      for (const Descriptor* t : fresh) {
        if (tainted.count(t)) continue;
        for (int i = 0; i < t->field_count(); i++) {
          const FieldDescriptor* f = t->field(i);
          if (is_secret_field(*f) || (f->message_type() && leads_to_secret(f->message_type()))) {
            tainted.insert(t);
            changed = true;
            break;
          }
        }
      }
    }
    for (const Descriptor* t : fresh) plans_.emplace(t, std::make_unique<Plan>());
    for (const Descriptor* t : fresh) {
      if (!tainted.count(t)) continue;
      Plan& p = *plans_.at(t);
      for (int i = 0; i < t->field_count(); i++) {
        const FieldDescriptor* f = t->field(i);
        if (is_secret_field(*f)) {
          p.secret.push_back(f);
        } else if (f->message_type() && leads_to_secret(f->message_type())) {
          p.nested.emplace_back(f, plans_.at(f->message_type()).get());
        }
      }
    }
  }

  std::shared_mutex mu_;
  std::unordered_map<const Descriptor*, std::unique_ptr<Plan>> plans_;
};

// Calls `visit` on every sub-message held by `field` of `m`.
template <class Visit>
void for_each_message(const Message& m, const Reflection& r, const FieldDescriptor& f, Visit visit) {
  if (f.is_repeated()) {
    for (int i = 0, n = r.FieldSize(m, &f); i < n; i++) visit(r.GetRepeatedMessage(m, &f, i));
  } else if (r.HasField(m, &f)) {
    visit(r.GetMessage(m, &f));
  }
}

void add_strings(const Message& m, const Reflection& r, const FieldDescriptor& f, std::vector<std::string>& out);

// Everything beneath a secret field of message type counts as secret.
void add_all_strings(const Message& m, std::vector<std::string>& out) {
  const Reflection& r = *m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r.ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) add_strings(m, r, *f, out);
}

void add_strings(const Message& m, const Reflection& r, const FieldDescriptor& f, std::vector<std::string>& out) {
  auto add = [&out](std::string s) {
    if (!s.empty()) out.push_back(std::move(s));
  };
  if (f.cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    if (f.is_repeated()) {
      for (int i = 0, n = r.FieldSize(m, &f); i < n; i++) add(r.GetRepeatedString(m, &f, i));
    } else {
      add(r.GetString(m, &f));
    }
  } else if (f.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    for_each_message(m, r, f, [&out](const Message& sub) { add_all_strings(sub, out); });
  }
}

void collect(const Message& m, const Plan& plan, std::vector<std::string>& out) {
  const Reflection& r = *m.GetReflection();
  for (const FieldDescriptor* f : plan.secret) add_strings(m, r, *f, out);
  for (const auto& [f, sub] : plan.nested) {
    for_each_message(m, r, *f, [&out, sub = sub](const Message& child) { collect(child, *sub, out); });
  }
}

void scrub(Message& m, const Plan& plan) {
  const Reflection& r = *m.GetReflection();
  for (const FieldDescriptor* f : plan.secret) r.ClearField(&m, f);
  for (const auto& [f, sub] : plan.nested) {
    if (f->is_repeated()) {
      for (int i = 0, n = r.FieldSize(m, f); i < n; i++) scrub(*r.MutableRepeatedMessage(&m, f, i), *sub);
    } else if (r.HasField(m, f)) {
      scrub(*r.MutableMessage(&m, f), *sub);
    }
  }
}

// Unknown fields are discarded by a walk of our own: protobuf's
// DiscardUnknownFields lists every set field of every message and reaches
// each map field through its repeated form, which turns a map<string,
// string> into entry messages (and back on the next read): about 15,000
// instructions for a small DriverSandbox, three quarters of the plan's view
// of a create. A map entry keeps no unknown field once parsed, so only
// message-valued maps need a look; the contract's one (Struct.fields) is
// walked through its generated API. What the walk cannot name (extensions,
// another message-valued map) is left to protobuf.
//
// `type` is m's descriptor, which the caller knows from the field it came
// through: a message's descriptor costs a virtual call and a once-flag, and
// this walk visits every set message of the view.
void discard_unknown_fields(Message& m, const Descriptor& type) {
  static const Descriptor* const kStruct = google::protobuf::Struct::descriptor();
  static const Descriptor* const kValue = google::protobuf::Value::descriptor();
  if (&type == kStruct) {
    auto* as_struct = dynamic_cast<google::protobuf::Struct*>(&m);
    if (as_struct == nullptr) return m.DiscardUnknownFields();
    const Reflection& r = *m.GetReflection();
    if (!r.GetUnknownFields(m).empty()) r.MutableUnknownFields(&m)->Clear();
    for (auto& [key, value] : *as_struct->mutable_fields()) discard_unknown_fields(value, *kValue);
    return;
  }
  const MessageFields& w = message_fields(type);
  if (w.extensions || w.message_valued_map) return m.DiscardUnknownFields();
  const Reflection& r = *m.GetReflection();
  if (!r.GetUnknownFields(m).empty()) r.MutableUnknownFields(&m)->Clear();
  for (const FieldDescriptor* f : w.singular) {
    if (r.HasField(m, f)) discard_unknown_fields(*r.MutableMessage(&m, f), *f->message_type());
  }
  for (const FieldDescriptor* f : w.repeated) {
    for (int i = 0, n = r.FieldSize(m, f); i < n; i++) {
      discard_unknown_fields(*r.MutableRepeatedMessage(&m, f, i), *f->message_type());
    }
  }
}

// The contract's DriverSandbox, every create's view, walked through its
// generated accessors: reflection's HasField and MutableMessage cost about
// 170 instructions each, and the generic walk above makes a dozen such calls
// per view. It is used only while the schema is the one it was written for
// (sandbox_walk_fits): a newer contract with another secret or message field
// takes the generic walk again.
namespace sbpb = openshell::compute::v1;

void drop_unknown(Message& m) {
  const Reflection& r = *m.GetReflection();
  if (!r.GetUnknownFields(m).empty()) r.MutableUnknownFields(&m)->Clear();
}

void scrub_sandbox(sbpb::DriverSandbox& sandbox) {
  static const Descriptor* const kStruct = google::protobuf::Struct::descriptor();
  drop_unknown(sandbox);
  if (sandbox.has_spec()) {
    sbpb::DriverSandboxSpec& spec = *sandbox.mutable_spec();
    drop_unknown(spec);
    spec.clear_sandbox_token();
    if (spec.has_template_()) {
      sbpb::DriverSandboxTemplate& tmpl = *spec.mutable_template_();
      drop_unknown(tmpl);
      if (tmpl.has_resources()) drop_unknown(*tmpl.mutable_resources());
      if (tmpl.has_platform_config()) discard_unknown_fields(*tmpl.mutable_platform_config(), *kStruct);
      if (tmpl.has_driver_config()) discard_unknown_fields(*tmpl.mutable_driver_config(), *kStruct);
    }
    if (spec.has_resource_requirements()) {
      sbpb::ResourceRequirements& rr = *spec.mutable_resource_requirements();
      drop_unknown(rr);
      if (rr.has_gpu()) drop_unknown(*rr.mutable_gpu());
    }
  }
  if (sandbox.has_status()) {
    sbpb::DriverSandboxStatus& status = *sandbox.mutable_status();
    drop_unknown(status);
    for (sbpb::DriverCondition& c : *status.mutable_conditions()) drop_unknown(c);
  }
}

// What scrub_sandbox() knows of each type it reaches: the message fields it
// descends into (number -> type, repeated or not) and the secret fields it
// clears. Any other message field, secret, extension range or
// message-valued map in the schema, and the walk would miss it.
struct KnownType {
  std::string_view name;
  std::vector<std::tuple<int, std::string_view, bool>> messages;  // number, type, repeated
  std::vector<int> secrets;
};

bool type_fits(const Descriptor& type, const KnownType& known) {
  if (type.full_name() != known.name || type.extension_range_count() > 0) return false;
  size_t messages = 0, secrets = 0;
  for (int i = 0; i < type.field_count(); i++) {
    const FieldDescriptor& f = *type.field(i);
    if (is_secret_field(f)) {
      if (std::find(known.secrets.begin(), known.secrets.end(), f.number()) == known.secrets.end()) return false;
      if (f.is_repeated() || f.cpp_type() != FieldDescriptor::CPPTYPE_STRING) return false;
      secrets++;
      continue;
    }
    if (f.cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f.is_map()) {
      if (f.message_type()->map_value()->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) return false;
      continue;
    }
    auto it = std::find_if(known.messages.begin(), known.messages.end(),
                           [&](const auto& m) { return std::get<0>(m) == f.number(); });
    if (it == known.messages.end() || f.message_type()->full_name() != std::get<1>(*it) ||
        f.is_repeated() != std::get<2>(*it)) {
      return false;
    }
    messages++;
  }
  return messages == known.messages.size() && secrets == known.secrets.size();
}

}  // namespace

bool sandbox_walk_fits(const Descriptor& sandbox) {
  static const std::vector<KnownType> kKnown = {
      {"openshell.compute.v1.DriverSandbox",
       {{4, "openshell.compute.v1.DriverSandboxSpec", false}, {5, "openshell.compute.v1.DriverSandboxStatus", false}},
       {}},
      {"openshell.compute.v1.DriverSandboxSpec",
       {{6, "openshell.compute.v1.DriverSandboxTemplate", false},
        {9, "openshell.compute.v1.ResourceRequirements", false}},
       {11}},
      {"openshell.compute.v1.ResourceRequirements", {{1, "openshell.compute.v1.GpuResourceRequirements", false}}, {}},
      {"openshell.compute.v1.GpuResourceRequirements", {}, {}},
      {"openshell.compute.v1.DriverSandboxTemplate",
       {{10, "openshell.compute.v1.DriverResourceRequirements", false},
        {11, "google.protobuf.Struct", false},
        {12, "google.protobuf.Struct", false}},
       {}},
      {"openshell.compute.v1.DriverResourceRequirements", {}, {}},
      {"openshell.compute.v1.DriverSandboxStatus", {{5, "openshell.compute.v1.DriverCondition", true}}, {}},
      {"openshell.compute.v1.DriverCondition", {}, {}},
  };
  // Every type reached from `sandbox` must be one of kKnown (Struct aside,
  // walked generically and never holding a secret).
  std::vector<const Descriptor*> todo{&sandbox};
  std::unordered_set<const Descriptor*> seen;
  while (!todo.empty()) {
    const Descriptor* t = todo.back();
    todo.pop_back();
    if (!seen.insert(t).second) continue;
    if (t->full_name() == "google.protobuf.Struct") {
      if (may_hold_secrets(*t)) return false;
      continue;
    }
    auto it = std::find_if(kKnown.begin(), kKnown.end(), [&](const KnownType& k) { return k.name == t->full_name(); });
    if (it == kKnown.end() || !type_fits(*t, *it)) return false;
    for (int i = 0; i < t->field_count(); i++) {
      const FieldDescriptor* f = t->field(i);
      if (f->message_type() && !f->is_map()) todo.push_back(f->message_type());
    }
  }
  return true;
}

bool is_secret_field(const FieldDescriptor& field) {
  return field.options().GetExtension(openshell::options::v1::secret);
}

bool may_hold_secrets(const Descriptor& type) {
  return !PlanCache::instance().plan(type).empty();
}

void scrub_secrets(Message& message) {
  const Descriptor& type = *message.GetDescriptor();
  static const bool sandbox_fits = sandbox_walk_fits(*sbpb::DriverSandbox::descriptor());
  if (&type == sbpb::DriverSandbox::descriptor() && sandbox_fits) {
    // A dynamic message of the type has no generated accessors.
    if (auto* sandbox = dynamic_cast<sbpb::DriverSandbox*>(&message)) return scrub_sandbox(*sandbox);
  }
  const Plan& plan = PlanCache::instance().plan(type);
  if (!plan.empty()) scrub(message, plan);
  discard_unknown_fields(message, type);
}

std::unique_ptr<Message> scrubbed_copy(const Message& message) {
  std::unique_ptr<Message> copy(message.New());
  copy->CopyFrom(message);
  scrub_secrets(*copy);
  return copy;
}

std::vector<std::string> collect_secrets(const Message& message) {
  std::vector<std::string> out;
  const Plan& plan = PlanCache::instance().plan(*message.GetDescriptor());
  if (!plan.empty()) collect(message, plan, out);
  return out;
}

std::string redact_secrets(std::string text, const std::vector<std::string>& secrets) {
  std::vector<std::string_view> sorted;
  for (const std::string& s : secrets) {
    if (!s.empty()) sorted.push_back(s);
  }
  if (sorted.empty()) return text;
  std::sort(sorted.begin(), sorted.end(), [](auto a, auto b) { return a.size() > b.size(); });
  // One pass, so a secret cannot match inside an earlier "[REDACTED]".
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    auto hit = std::find_if(sorted.begin(), sorted.end(),
                            [&](std::string_view s) { return std::string_view(text).substr(pos, s.size()) == s; });
    if (hit == sorted.end()) {
      out.push_back(text[pos++]);
    } else {
      out += "[REDACTED]";
      pos += hit->size();
    }
  }
  return out;
}

}  // namespace owrap
