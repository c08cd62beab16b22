#include "plan/write_back.h"

#include "plan/string_maps.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <boost/container/small_vector.hpp>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace owrap {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::OneofDescriptor;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;

namespace {

// Both sides are plan views, which carry no unknown fields. Several times
// cheaper than MessageDifferencer, which walks maps through reflection.
bool same_message(const Message& a, const Message& b) {
  return canonical_bytes(a) == canonical_bytes(b);
}

bool same_field(const Message& a, const Message& b, const FieldDescriptor* field) {
  const Reflection* r = a.GetReflection();
  if (field->has_presence() && r->HasField(a, field) != r->HasField(b, field)) return false;
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    if (!field->is_repeated()) return same_message(r->GetMessage(a, field), r->GetMessage(b, field));
    int n = r->FieldSize(a, field);
    if (n != r->FieldSize(b, field)) return false;
    for (int i = 0; i < n; i++) {
      if (!same_message(r->GetRepeatedMessage(a, field, i), r->GetRepeatedMessage(b, field, i))) return false;
    }
    return true;
  }
  thread_local MessageDifferencer differencer;  // scalars: cheap; costly to build, so one per thread
  return differencer.CompareWithFields(a, b, {field}, {field});
}

// Moves `after`'s value of `field` (or its absence) onto `target`.
void take_field(Message& after, Message& target, const FieldDescriptor* field) {
  const Reflection* r = after.GetReflection();
  if (field->has_presence() && !r->HasField(after, field)) {
    r->ClearField(&target, field);
    return;
  }
  r->SwapFields(&after, &target, {field});
}

void write_message_field(const Message& before, Message& after, Message& target, const FieldDescriptor* field) {
  const Reflection* r = after.GetReflection();
  if (!r->HasField(after, field)) {
    if (r->HasField(before, field)) r->ClearField(&target, field);
    return;
  }
  if (same_field(before, after, field)) return;
  write_changes(r->GetMessage(before, field), *r->MutableMessage(&after, field), *r->MutableMessage(&target, field));
}

// A oneof changes as a unit: the same message member is descended, anything
// else replaces target's member.
void write_oneof(const Message& before, Message& after, Message& target, const OneofDescriptor* oneof) {
  const Reflection* r = after.GetReflection();
  const FieldDescriptor* was = r->GetOneofFieldDescriptor(before, oneof);
  const FieldDescriptor* now = r->GetOneofFieldDescriptor(after, oneof);
  if (!now) {
    if (was) r->ClearOneof(&target, oneof);
    return;
  }
  if (was == now && same_field(before, after, now)) return;
  if (was == now && now->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
      r->GetOneofFieldDescriptor(target, oneof) == now) {
    write_changes(r->GetMessage(before, now), *r->MutableMessage(&after, now), *r->MutableMessage(&target, now));
    return;
  }
  r->ClearOneof(&target, oneof);
  r->SwapFields(&after, &target, {now});
}

using EntryIndex = std::map<std::string, int>;

EntryIndex index_entries(const Message& message, const FieldDescriptor* map) {
  const Reflection* r = message.GetReflection();
  const FieldDescriptor* key = map->message_type()->map_key();
  EntryIndex out;
  for (int i = 0; i < r->FieldSize(message, map); i++) {
    const Message& entry = r->GetRepeatedMessage(message, map, i);
    out[entry.GetReflection()->GetString(entry, key)] = i;
  }
  return out;
}

int find_entry(const Message& message, const FieldDescriptor* map, const std::string& key) {
  const Reflection* r = message.GetReflection();
  const FieldDescriptor* key_field = map->message_type()->map_key();
  for (int i = 0, n = r->FieldSize(message, map); i < n; i++) {
    const Message& entry = r->GetRepeatedMessage(message, map, i);
    if (entry.GetReflection()->GetString(entry, key_field) == key) return i;
  }
  return -1;
}

void erase_entry(Message& target, const FieldDescriptor* map, const std::string& key) {
  const Reflection* r = target.GetReflection();
  int at = find_entry(target, map, key);
  if (at < 0) return;
  int last = r->FieldSize(target, map) - 1;
  if (at != last) r->SwapElements(&target, map, at, last);
  r->RemoveLast(&target, map);
}

void write_map(const Message& before, Message& after, Message& target, const FieldDescriptor* map) {
  const Reflection* r = after.GetReflection();
  if (map->message_type()->map_key()->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    if (!same_field(before, after, map)) take_field(after, target, map);
    return;
  }
  EntryIndex was = index_entries(before, map);
  EntryIndex now = index_entries(after, map);
  EntryIndex there = index_entries(target, map);
  for (const auto& [key, i] : now) {
    Message* entry = r->MutableRepeatedMessage(&after, map, i);
    auto old = was.find(key);
    if (old != was.end() && same_message(r->GetRepeatedMessage(before, map, old->second), *entry)) continue;
    auto in_target = there.find(key);
    if (in_target == there.end()) {
      r->AddMessage(&target, map)->CopyFrom(*entry);
    } else if (old != was.end()) {
      write_changes(r->GetRepeatedMessage(before, map, old->second), *entry,
                    *r->MutableRepeatedMessage(&target, map, in_target->second));
    } else {
      r->MutableRepeatedMessage(&target, map, in_target->second)->CopyFrom(*entry);
    }
  }
  for (const auto& [key, i] : was) {
    if (!now.count(key)) erase_entry(target, map, key);
  }
}

// `message`'s own copy, made on first use: the write-back by changed paths
// copies only the levels where it has to hand write_changes() a value to
// move from, never the whole plan.
class CopyOnUse {
 public:
  explicit CopyOnUse(const Message& message) : message_(message) {}
  Message& get() {
    if (!copy_) {
      copy_.reset(message_.New());
      copy_->CopyFrom(message_);
    }
    return *copy_;
  }

 private:
  const Message& message_;
  std::unique_ptr<Message> copy_;
};

// One key of a string-keyed map, as write_map() treats each key.
void write_entry(const Message& before, const Message& after, Message& target, const FieldDescriptor* map,
                 const std::string& key) {
  const Reflection* r = after.GetReflection();
  int was = find_entry(before, map, key);
  int now = find_entry(after, map, key);
  if (now < 0) {
    if (was >= 0) erase_entry(target, map, key);
    return;
  }
  const Message& entry = r->GetRepeatedMessage(after, map, now);
  if (was >= 0 && same_message(r->GetRepeatedMessage(before, map, was), entry)) return;
  int there = find_entry(target, map, key);
  if (there < 0) {
    r->AddMessage(&target, map)->CopyFrom(entry);
  } else if (was >= 0) {
    CopyOnUse copy(entry);
    write_changes(r->GetRepeatedMessage(before, map, was), copy.get(), *r->MutableRepeatedMessage(&target, map, there));
  } else {
    r->MutableRepeatedMessage(&target, map, there)->CopyFrom(entry);
  }
}

// write_entry() for one key of one of the plan's string maps, without their
// repeated form: the value is a string, nothing can hide beneath it.
void write_string_entry(const StringMap& was_map, const StringMap& now_map, StringMap& there, const std::string& key) {
  auto was = was_map.find(key);
  auto now = now_map.find(key);
  if (now == now_map.end()) {
    if (was != was_map.end()) there.erase(key);
  } else if (was == was_map.end() || was->second != now->second) {
    there[key] = now->second;
  }
}

// write_entry() for a Struct's key, through the Struct's own map.
void write_struct_entry(const google::protobuf::Struct& before, const google::protobuf::Struct& after,
                        google::protobuf::Struct& target, const std::string& key) {
  const auto& was_fields = before.fields();
  const auto& now_fields = after.fields();
  auto& there_fields = *target.mutable_fields();
  auto was = was_fields.find(key);
  auto now = now_fields.find(key);
  if (now == now_fields.end()) {
    if (was != was_fields.end()) there_fields.erase(key);
    return;
  }
  if (was != was_fields.end() && same_message(was->second, now->second)) return;
  auto there = there_fields.find(key);
  if (there == there_fields.end()) {
    there_fields[key] = now->second;
  } else if (was != was_fields.end()) {
    CopyOnUse copy(now->second);
    write_changes(was->second, copy.get(), there->second);
  } else {
    there->second.CopyFrom(now->second);
  }
}

bool is_struct(const google::protobuf::Descriptor* type) {
  return type->full_name() == "google.protobuf.Struct";
}

using Node = ChangedPaths::Node;

// A map field whose changed keys are known: only those keys are written.
// The maps themselves are looked up once, not per key.
void write_map_at(const Message& before, CopyOnUse& after_copy, const Message& after, Message& target,
                  const FieldDescriptor* map, const ChangedPaths& changed, Node node) {
  if (changed.whole(node) || map->message_type()->map_key()->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    write_map(before, after_copy.get(), target, map);
    return;
  }
  if (is_struct(map->containing_type())) {
    const auto* was = dynamic_cast<const google::protobuf::Struct*>(&before);
    const auto* now = dynamic_cast<const google::protobuf::Struct*>(&after);
    auto* there = dynamic_cast<google::protobuf::Struct*>(&target);
    for (Node c = changed.first_child(node); c != ChangedPaths::kNone; c = changed.next_sibling(c)) {
      if (was && now && there) {
        write_struct_entry(*was, *now, *there, changed.token(c));
      } else {
        write_entry(before, after, target, map, changed.token(c));
      }
    }
    return;
  }
  const StringMap* was = string_map(before, *map);
  const StringMap* now = string_map(after, *map);
  StringMap* there = was && now ? mutable_string_map(target, *map) : nullptr;
  for (Node c = changed.first_child(node); c != ChangedPaths::kNone; c = changed.next_sibling(c)) {
    if (there) {
      write_string_entry(*was, *now, *there, changed.token(c));
    } else {
      write_entry(before, after, target, map, changed.token(c));
    }
  }
}

void write_at(const Message& before, const Message& after, Message& target, const ChangedPaths& changed, Node node);

void write_field_at(const Message& before, CopyOnUse& after_copy, const Message& after, Message& target,
                    const FieldDescriptor* field, const ChangedPaths& changed, Node node) {
  if (const OneofDescriptor* oneof = field->real_containing_oneof()) {
    write_oneof(before, after_copy.get(), target, oneof);
    return;
  }
  if (field->is_map()) {
    write_map_at(before, after_copy, after, target, field, changed, node);
    return;
  }
  if (field->is_repeated() || field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
    if (!same_field(before, after, field)) take_field(after_copy.get(), target, field);
    return;
  }
  const Reflection* r = after.GetReflection();
  if (!r->HasField(after, field)) {
    if (r->HasField(before, field)) r->ClearField(&target, field);
  } else if (changed.whole(node)) {
    if (!r->HasField(before, field) && !r->HasField(target, field)) {
      // New here and nothing hidden beneath it: write_changes() would copy it key by key.
      r->MutableMessage(&target, field)->CopyFrom(r->GetMessage(after, field));
      return;
    }
    if (same_field(before, after, field)) return;
    CopyOnUse copy(r->GetMessage(after, field));
    write_changes(r->GetMessage(before, field), copy.get(), *r->MutableMessage(&target, field));
  } else {
    write_at(r->GetMessage(before, field), r->GetMessage(after, field), *r->MutableMessage(&target, field), changed,
             node);
  }
}

// Descriptor::FindFieldByName() hashes the name into the pool's global
// table; the plan's messages have a few dozen fields at most, and a name's
// length rules out nearly all of them.
const FieldDescriptor* find_field(const google::protobuf::Descriptor& type, const std::string& name) {
  for (int i = 0, n = type.field_count(); i < n; i++) {
    const FieldDescriptor* field = type.field(i);
    if (field->name() == name) return field;
  }
  return nullptr;
}

void write_at(const Message& before, const Message& after, Message& target, const ChangedPaths& changed, Node node) {
  CopyOnUse after_copy(after);
  if (changed.whole(node)) {
    write_changes(before, after_copy.get(), target);
    return;
  }
  const google::protobuf::Descriptor* type = after.GetDescriptor();
  if (is_struct(type)) {  // the JSON view names a Struct's keys right after it
    write_map_at(before, after_copy, after, target, type->field(0), changed, node);
    return;
  }
  boost::container::small_vector<std::pair<const FieldDescriptor*, Node>, 8> fields;
  for (Node c = changed.first_child(node); c != ChangedPaths::kNone; c = changed.next_sibling(c)) {
    const FieldDescriptor* field = find_field(*type, changed.token(c));
    if (!field) {  // not a path of this schema: judge the whole message
      write_changes(before, after_copy.get(), target);
      return;
    }
    fields.emplace_back(field, c);
  }
  boost::container::small_vector<const OneofDescriptor*, 4> oneofs_done;  // a oneof is written once, as a unit
  for (const auto& [field, below] : fields) {
    if (const OneofDescriptor* oneof = field->real_containing_oneof()) {
      if (std::find(oneofs_done.begin(), oneofs_done.end(), oneof) != oneofs_done.end()) continue;
      oneofs_done.push_back(oneof);
    }
    write_field_at(before, after_copy, after, target, field, changed, below);
  }
}

}  // namespace

void ChangedPaths::add(const PathTokens& path) {
  Node n = 0;
  for (const auto& token : path) {
    if (nodes_[n].whole) return;
    n = child(n, token);
  }
  nodes_[n].whole = true;
  nodes_[n].first_child = kNone;  // what was below is left unlinked
}

ChangedPaths::Node ChangedPaths::child(Node parent, const std::string& token) {
  Node* link = &nodes_[parent].first_child;
  for (; *link != kNone; link = &nodes_[*link].next_sibling) {
    const int order = nodes_[*link].token->compare(token);
    if (order == 0) return *link;
    if (order > 0) break;
  }
  const Node fresh = static_cast<Node>(nodes_.size());
  const Node next = *link;
  *link = fresh;  // before the push_back, which may move the nodes
  nodes_.push_back(Entry{&token, false, kNone, next});
  return fresh;
}

void write_changes_at(const Message& before, const Message& after, Message& target, const ChangedPaths& changed) {
  write_at(before, after, target, changed, 0);
}

std::string canonical_bytes(const Message& m) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  m.SerializePartialToCodedStream(&coded);
  coded.Trim();
  return out;
}

void write_changes(const Message& before, Message& after, Message& target) {
  const google::protobuf::Descriptor* type = after.GetDescriptor();
  for (int i = 0; i < type->field_count(); i++) {
    const FieldDescriptor* field = type->field(i);
    if (const OneofDescriptor* oneof = field->real_containing_oneof()) {
      if (oneof->field(0) == field) write_oneof(before, after, target, oneof);
    } else if (field->is_map()) {
      write_map(before, after, target, field);
    } else if (field->is_repeated() || field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!same_field(before, after, field)) take_field(after, target, field);
    } else {
      write_message_field(before, after, target, field);
    }
  }
}

}  // namespace owrap
