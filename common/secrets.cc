#include "common/secrets.h"

#include "common/message_fields.h"

#include "options.pb.h"

#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <deque>
#include <shared_mutex>
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

}  // namespace

bool is_secret_field(const FieldDescriptor& field) {
  return field.options().GetExtension(openshell::options::v1::secret);
}

bool may_hold_secrets(const Descriptor& type) {
  return !PlanCache::instance().plan(type).empty();
}

void scrub_secrets(Message& message) {
  const Descriptor& type = *message.GetDescriptor();
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
