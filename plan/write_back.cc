#include "plan/write_back.h"

#include <google/protobuf/util/message_differencer.h>

#include <map>
#include <string>

namespace owrap {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::OneofDescriptor;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;

namespace {

bool same_field(const Message& a, const Message& b, const FieldDescriptor* field) {
  const Reflection* r = a.GetReflection();
  if (field->has_presence() && r->HasField(a, field) != r->HasField(b, field)) return false;
  thread_local MessageDifferencer differencer;  // costly to build; used by one thread at a time
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

void erase_entry(Message& target, const FieldDescriptor* map, const std::string& key) {
  const Reflection* r = target.GetReflection();
  EntryIndex there = index_entries(target, map);
  auto at = there.find(key);
  if (at == there.end()) return;
  int last = r->FieldSize(target, map) - 1;
  if (at->second != last) r->SwapElements(&target, map, at->second, last);
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
    if (old != was.end() && MessageDifferencer::Equals(r->GetRepeatedMessage(before, map, old->second), *entry))
      continue;
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

}  // namespace

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
