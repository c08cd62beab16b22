#include "plan/message_target.h"

#include "common/message_fields.h"

#include "plan/proto_json.h"
#include "plan/string_maps.h"

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace owrap {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::ListValue;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::Struct;
using google::protobuf::Value;
using nlohmann::json;

namespace {

using Node = MessageTarget::Node;
using Kind = Node::Kind;

[[noreturn]] void unsure() {
  throw MessageTarget::Unsure{};
}

bool present(const Message& m, const FieldDescriptor& f) {
  const Reflection& r = *m.GetReflection();
  return f.is_repeated() ? r.FieldSize(m, &f) > 0 : r.HasField(m, &f);
}

Node of_value(Value& v) {
  switch (v.kind_case()) {
    case Value::kStructValue:
      return Node{Kind::kStruct, nullptr, nullptr, nullptr, v.mutable_struct_value()};
    case Value::kListValue:
      return Node{Kind::kList, nullptr, nullptr, nullptr, nullptr, v.mutable_list_value()};
    case Value::KIND_NOT_SET:
      unsure();  // protobuf's printer refuses it
    default:
      return Node{};
  }
}

Node of_message(Message& m) {
  switch (m.GetDescriptor()->well_known_type()) {
    case Descriptor::WELLKNOWNTYPE_UNSPECIFIED:
      return Node{Kind::kMessage, &m};
    case Descriptor::WELLKNOWNTYPE_STRUCT:
      if (auto* s = dynamic_cast<Struct*>(&m)) return Node{Kind::kStruct, nullptr, nullptr, nullptr, s};
      unsure();
    case Descriptor::WELLKNOWNTYPE_VALUE:
      if (auto* v = dynamic_cast<Value*>(&m)) return of_value(*v);
      unsure();
    case Descriptor::WELLKNOWNTYPE_LISTVALUE:
      if (auto* l = dynamic_cast<ListValue*>(&m)) return Node{Kind::kList, nullptr, nullptr, nullptr, nullptr, l};
      unsure();
    default:  // Any, Timestamp, Duration, wrappers...: printed as no object
      unsure();
  }
}

// The member `token` of `node`, as the JSON form would find it.
std::optional<Node> child(const Node& node, const std::string& token) {
  switch (node.kind) {
    case Kind::kMessage: {
      Message& m = *node.message;
      const FieldDescriptor* f = m.GetDescriptor()->FindFieldByName(token);
      if (!f || !present(m, *f)) return std::nullopt;  // the form has proto field names only
      if (f->is_map()) {
        StringMap* strings = mutable_string_map(m, *f);
        if (!strings) unsure();
        return Node{Kind::kStrings, nullptr, nullptr, strings};
      }
      if (f->is_repeated()) return Node{Kind::kRepeated, &m, f};
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE)
        return of_message(*m.GetReflection()->MutableMessage(&m, f));
      return Node{};
    }
    case Kind::kRepeated: {
      auto i = array_index(token);
      const Reflection& r = *node.message->GetReflection();
      if (!i || *i >= static_cast<size_t>(r.FieldSize(*node.message, node.field))) return std::nullopt;
      if (node.field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return Node{};
      return of_message(*r.MutableRepeatedMessage(node.message, node.field, static_cast<int>(*i)));
    }
    case Kind::kStrings:
      if (node.strings->find(token) == node.strings->end()) return std::nullopt;
      return Node{};
    case Kind::kStruct: {
      auto it = node.fields->mutable_fields()->find(token);
      if (it == node.fields->mutable_fields()->end()) return std::nullopt;
      return of_value(it->second);
    }
    case Kind::kList: {
      auto i = array_index(token);
      if (!i || *i >= static_cast<size_t>(node.list->values_size())) return std::nullopt;
      return of_value(*node.list->mutable_values(static_cast<int>(*i)));
    }
    case Kind::kScalar:
      return std::nullopt;
  }
  return std::nullopt;
}

// Both have the same members and array lengths, all the way down; scalars
// of any kind match (what is asked of the document never looks inside one).
bool same_shape(const json& a, const json& b) {
  if (a.is_object() != b.is_object() || a.is_array() != b.is_array() || a.is_null() != b.is_null()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++) {
      if (!same_shape(a[i], b[i])) return false;
    }
    return true;
  }
  if (!a.is_object()) return true;
  if (a.size() != b.size()) return false;
  for (const auto& [key, item] : a.items()) {
    auto other = b.find(key);
    if (other == b.end() || !same_shape(item, *other)) return false;
  }
  return true;
}

// A message the form writes as an object of its fields: it must print
// back with the members and lengths the hook wrote. Struct, Value and
// ListValue print back exactly what was read; other types are not reached.
void check_message(const Message& m, const json& written) {
  if (m.GetDescriptor()->well_known_type() != Descriptor::WELLKNOWNTYPE_UNSPECIFIED) return;
  json printed;
  if (!proto_json::write_message(m, printed) || !same_shape(printed, written)) unsure();
}

// Field `f` of `m`, just read from `v`, prints back as `v` did.
void check_field(const Message& m, const FieldDescriptor& f, const json& v) {
  if (!present(m, f)) unsure();  // a default scalar, an empty list or map: the form drops it
  const Reflection& r = *m.GetReflection();
  if (f.is_map()) {
    if (static_cast<size_t>(r.FieldSize(m, &f)) != v.size()) unsure();
    if (f.message_type()->map_value()->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) unsure();
    return;
  }
  if (f.cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return;
  if (!f.is_repeated()) return check_message(r.GetMessage(m, &f), v);
  for (int i = 0; i < r.FieldSize(m, &f); i++) check_message(r.GetRepeatedMessage(m, &f, i), v[i]);
}

// Nesting levels a member at `path` may already be at: each token is one
// level, or two for a map entry; the readers stop deep documents early.
int depth_of(const PathTokens& path) {
  return static_cast<int>(2 * path.size());
}

size_t insert_index(const std::string& token, size_t size) {
  if (token == "-") return size;
  auto i = array_index(token);
  if (!i || *i > size) unsure();  // the form's error words it
  return *i;
}

size_t element_index(const std::string& token, size_t size) {
  auto i = array_index(token);
  if (!i || *i >= size) unsure();
  return *i;
}

Value value_from(const json& v, int depth) {
  Value out;
  if (!proto_json::read_value(v, out, depth)) unsure();
  return out;
}

// Levels (messages, Structs, Values, lists) below which a view is surely
// printed and read back by the walks and by protobuf alike.
constexpr int kPrintableDepth = 24;

bool value_prints_back(const Value& v, int depth);

bool struct_prints_back(const Struct& s, int depth) {
  if (depth > kPrintableDepth) return false;
  for (const auto& [key, value] : s.fields()) {
    if (!value_prints_back(value, depth + 1)) return false;
  }
  return true;
}

bool list_prints_back(const ListValue& l, int depth) {
  if (depth > kPrintableDepth) return false;
  for (const auto& value : l.values()) {
    if (!value_prints_back(value, depth + 1)) return false;
  }
  return true;
}

bool value_prints_back(const Value& v, int depth) {
  if (depth > kPrintableDepth) return false;
  switch (v.kind_case()) {
    case Value::kNullValue:
      return v.null_value() == google::protobuf::NULL_VALUE;
    case Value::kNumberValue:
      return std::isfinite(v.number_value()) && !(v.number_value() == 0 && std::signbit(v.number_value()));
    case Value::kStringValue:
    case Value::kBoolValue:
      return true;
    case Value::kStructValue:
      return struct_prints_back(v.struct_value(), depth + 1);
    case Value::kListValue:
      return list_prints_back(v.list_value(), depth + 1);
    default:  // no kind: the printer leaves the member out
      return false;
  }
}

bool message_prints_back(const Message& m, int depth) {
  if (depth > kPrintableDepth) return false;
  switch (m.GetDescriptor()->well_known_type()) {
    case Descriptor::WELLKNOWNTYPE_UNSPECIFIED:
      break;
    case Descriptor::WELLKNOWNTYPE_STRUCT:
      if (auto* s = dynamic_cast<const Struct*>(&m)) return struct_prints_back(*s, depth);
      return false;
    case Descriptor::WELLKNOWNTYPE_VALUE:
      if (auto* v = dynamic_cast<const Value*>(&m)) return value_prints_back(*v, depth);
      return false;
    case Descriptor::WELLKNOWNTYPE_LISTVALUE:
      if (auto* l = dynamic_cast<const ListValue*>(&m)) return list_prints_back(*l, depth);
      return false;
    default:
      return false;
  }
  const MessageFields& w = message_fields(*m.GetDescriptor());
  if (w.extensions || w.message_valued_map) return false;  // members this walk cannot reach
  const Reflection& r = *m.GetReflection();
  for (const FieldDescriptor* f : w.singular) {
    if (r.HasField(m, f) && !message_prints_back(r.GetMessage(m, f), depth + 1)) return false;
  }
  for (const FieldDescriptor* f : w.repeated) {
    for (int i = 0, n = r.FieldSize(m, f); i < n; i++) {
      if (!message_prints_back(r.GetRepeatedMessage(m, f, i), depth + 1)) return false;
    }
  }
  return true;
}

// A JSON value read into a Value prints back if no number in it is one the
// printer writes otherwise and its nesting stays `levels` deep at most
// (each JSON level is two of the walk's: a Value and its Struct or list).
bool json_prints_back(const json& v, int levels) {
  if (levels < 0) return false;
  switch (v.type()) {
    case json::value_t::number_float: {
      double d = v.get<double>();
      return std::isfinite(d) && !(d == 0 && std::signbit(d));
    }
    case json::value_t::object:
      for (const auto& [key, item] : v.get_ref<const json::object_t&>()) {
        if (!json_prints_back(item, levels - 2)) return false;
      }
      return true;
    case json::value_t::array:
      for (const auto& item : v.get_ref<const json::array_t&>()) {
        if (!json_prints_back(item, levels - 2)) return false;
      }
      return true;
    default:
      return true;
  }
}

// A field whose written values the walk checks as JSON-read Values: Struct,
// Value and ListValue fields. Other message fields are walked again.
bool holds_values(const FieldDescriptor& f) {
  if (f.cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f.is_map()) return false;
  switch (f.message_type()->well_known_type()) {
    case Descriptor::WELLKNOWNTYPE_STRUCT:
    case Descriptor::WELLKNOWNTYPE_VALUE:
    case Descriptor::WELLKNOWNTYPE_LISTVALUE:
      return true;
    default:
      return false;
  }
}

// Add, remove and replace below the whole document: all the target runs.
bool runs(const PatchOp& op) {
  return !op.path.empty() && (op.op == "add" || op.op == "remove" || op.op == "replace");
}

}  // namespace

bool MessageTarget::prints_back(const Message& view) {
  return message_prints_back(view, 0);
}

bool MessageTarget::handles(const json& patches) {
  for (const auto& op : patches) {
    if (!is_patch_op(op, {"add", "remove", "replace"})) return false;
  }
  return true;
}

bool MessageTarget::handles(const PreparedPatches& ops) {
  for (const auto& op : ops) {
    if (!runs(op)) return false;
  }
  return true;
}

std::optional<MessageTarget::Node> MessageTarget::resolve(const PathTokens& path, size_t count) const {
  size_t kept = 0;
  while (kept < count && kept < walked_.size() && walked_[kept] == path[kept]) kept++;
  walked_.resize(kept);
  walked_nodes_.resize(kept);
  Node node = kept == 0 ? Node{Kind::kMessage, &root_} : walked_nodes_[kept - 1];
  for (size_t i = kept; i < count; i++) {
    auto next = child(node, path[i]);
    if (!next) return std::nullopt;
    node = *next;
    walked_.push_back(path[i]);
    walked_nodes_.push_back(node);
  }
  return node;
}

std::optional<json> MessageTarget::value_at(const PathTokens&) const {
  unsure();  // only move and copy read values: handles() sends them to the JSON form
}

bool MessageTarget::has_member(const PathTokens& path) const {
  if (path.empty()) return false;
  auto parent = resolve(path, path.size() - 1);
  if (!parent || (parent->kind != Kind::kMessage && parent->kind != Kind::kStrings && parent->kind != Kind::kStruct)) {
    return false;
  }
  return child(*parent, path.back()).has_value();
}

std::optional<size_t> MessageTarget::array_size(const PathTokens& path, size_t count) const {
  auto node = resolve(path, count);
  if (!node) return std::nullopt;
  if (node->kind == Kind::kRepeated) {
    return static_cast<size_t>(node->message->GetReflection()->FieldSize(*node->message, node->field));
  }
  if (node->kind == Kind::kList) return static_cast<size_t>(node->list->values_size());
  return std::nullopt;
}

std::string MessageTarget::run(const PatchOp& op) {
  if (!runs(op)) unsure();
  // The parent stays where it is: the operation changes what is in it.
  auto parent = resolve(op.path, op.path.size() - 1);
  if (!parent) unsure();               // a missing parent: the form's error words it
  walked_.resize(op.path.size() - 1);  // what lies below the parent may move or go
  walked_nodes_.resize(op.path.size() - 1);
  const int depth = depth_of(op.path);
  switch (parent->kind) {
    case Kind::kMessage:
      run_on_message(*parent->message, op, depth);
      break;
    case Kind::kRepeated:
      run_on_repeated(*parent->message, *parent->field, op, depth);
      break;
    case Kind::kStrings:
      run_on_strings(*parent->strings, op);
      break;
    case Kind::kStruct:
      run_on_struct(*parent->fields, op, depth);
      break;
    case Kind::kList:
      run_on_list(*parent->list, op, depth);
      break;
    case Kind::kScalar:
      unsure();
  }
  note_written(*parent, op);
  return "";
}

// The walk's depth at `op.path` is at most depth_of(op.path): a token is one
// level through a message or a repeated field, two through a Struct or list
// (the Value, then what it holds), none into a string map.
void MessageTarget::note_written(const Node& parent, const PatchOp& op) {
  if (op.op == "remove" || recheck_) return;  // a removal writes nothing
  const FieldDescriptor* f = nullptr;
  if (parent.kind == Kind::kMessage) {
    f = parent.message->GetDescriptor()->FindFieldByName(op.path.back());
  } else if (parent.kind == Kind::kRepeated) {
    f = parent.field;
  } else if (parent.kind == Kind::kStrings) {
    return;  // a string: printed as written
  }
  if (f && f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return;  // a scalar the walk never looks at
  if (f && f->is_map() && f->message_type()->map_value()->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return;
  if (f && !holds_values(*f)) {
    recheck_ = true;
    return;
  }
  if (!json_prints_back(*op.value, kPrintableDepth - depth_of(op.path))) recheck_ = true;
}

void MessageTarget::run_on_message(Message& m, const PatchOp& op, int depth) {
  const FieldDescriptor* f = m.GetDescriptor()->FindFieldByName(op.path.back());
  if (!f) unsure();  // a member the schema does not know: the form keeps it until the type check
  const Reflection& r = *m.GetReflection();
  if (op.op != "add" && !present(m, *f)) unsure();
  if (op.op == "remove") {
    r.ClearField(&m, f);
    return;
  }
  // A second member of a oneof: the form holds both until the type check.
  if (const auto* oneof = f->real_containing_oneof(); oneof && r.HasOneof(m, oneof)) {
    if (r.GetOneofFieldDescriptor(m, oneof) != f) unsure();
  }
  r.ClearField(&m, f);
  if (!proto_json::read_field(*op.value, m, *f, depth)) unsure();
  check_field(m, *f, *op.value);
}

void MessageTarget::run_on_repeated(Message& owner, const FieldDescriptor& f, const PatchOp& op, int depth) {
  const Reflection& r = *owner.GetReflection();
  const size_t size = static_cast<size_t>(r.FieldSize(owner, &f));
  const std::string& token = op.path.back();
  if (op.op == "remove") {
    size_t at = element_index(token, size);
    if (size == 1) unsure();  // an empty list: the form keeps [], the message prints nothing
    for (size_t j = at; j + 1 < size; j++) r.SwapElements(&owner, &f, static_cast<int>(j), static_cast<int>(j + 1));
    r.RemoveLast(&owner, &f);
    return;
  }
  const size_t at = op.op == "add" ? insert_index(token, size) : element_index(token, size);
  if (!proto_json::read_element(*op.value, owner, f, depth)) unsure();  // appended, at `size`
  if (f.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    check_message(r.GetRepeatedMessage(owner, &f, static_cast<int>(size)), *op.value);
  }
  if (op.op == "replace") {
    r.SwapElements(&owner, &f, static_cast<int>(at), static_cast<int>(size));
    r.RemoveLast(&owner, &f);
    return;
  }
  for (size_t j = size; j > at; j--) r.SwapElements(&owner, &f, static_cast<int>(j), static_cast<int>(j - 1));
}

void MessageTarget::run_on_strings(StringMap& map, const PatchOp& op) {
  const std::string& key = op.path.back();
  auto it = map.find(key);
  if (op.op != "add" && it == map.end()) unsure();
  if (op.op == "remove") {
    if (map.size() == 1) unsure();  // an empty map: the form keeps {}, the message prints nothing
    map.erase(it);
    return;
  }
  const json& v = *op.value;
  if (!v.is_string() || !proto_json::is_utf8(key) || !proto_json::is_utf8(v.get_ref<const std::string&>())) unsure();
  map[key] = v.get_ref<const std::string&>();
}

void MessageTarget::run_on_struct(Struct& s, const PatchOp& op, int depth) {
  auto& fields = *s.mutable_fields();
  const std::string& key = op.path.back();
  auto it = fields.find(key);
  if (op.op != "add" && it == fields.end()) unsure();
  if (op.op == "remove") {
    fields.erase(it);  // an empty Struct still prints as {}
    return;
  }
  if (!proto_json::is_utf8(key)) unsure();
  fields[key] = value_from(*op.value, depth);
}

void MessageTarget::run_on_list(ListValue& list, const PatchOp& op, int depth) {
  auto& values = *list.mutable_values();
  const size_t size = static_cast<size_t>(values.size());
  const std::string& token = op.path.back();
  if (op.op == "remove") {
    values.DeleteSubrange(static_cast<int>(element_index(token, size)), 1);  // an empty list still prints as []
    return;
  }
  if (op.op == "replace") {
    values[static_cast<int>(element_index(token, size))] = value_from(*op.value, depth);
    return;
  }
  const size_t at = insert_index(token, size);
  *values.Add() = value_from(*op.value, depth);
  for (size_t j = size; j > at; j--) values.SwapElements(static_cast<int>(j), static_cast<int>(j - 1));
}

}  // namespace owrap
