#include "proxy/wire_check.h"

#include <google/protobuf/stubs/common.h>
#include <google/protobuf/wire_format_lite.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace owrap {

namespace wire_detail {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using WFL = google::protobuf::internal::WireFormatLite;

// libprotobuf's default recursion limit: nested messages and groups.
constexpr int kMaxDepth = 100;

// What a length-delimited payload of a known field must be.
enum class Payload : uint8_t { kAny, kMessage, kUtf8, kPackedVarint, kPacked4, kPacked8 };

struct TypeCheck;
namespace {
struct FieldCheck {
  Payload payload = Payload::kAny;
  const TypeCheck* message = nullptr;
};
}  // namespace
// One message type's fields by number; numbers past the end (or gaps) are
// unknown fields, which only need to be well formed.
struct TypeCheck {
  std::vector<FieldCheck> by_number;
  const FieldCheck* field(uint32_t number) const {
    static const FieldCheck kUnknown;
    return number < by_number.size() ? &by_number[number] : &kUnknown;
  }
};
namespace {

Payload packed_payload(FieldDescriptor::Type t) {
  switch (t) {
    case FieldDescriptor::TYPE_FIXED32:
    case FieldDescriptor::TYPE_SFIXED32:
    case FieldDescriptor::TYPE_FLOAT:
      return Payload::kPacked4;
    case FieldDescriptor::TYPE_FIXED64:
    case FieldDescriptor::TYPE_SFIXED64:
    case FieldDescriptor::TYPE_DOUBLE:
      return Payload::kPacked8;
    default:
      return Payload::kPackedVarint;
  }
}

// Tables are built once per type (with every type they reach: recursive
// types such as google.protobuf.Struct point back at themselves) and kept
// for the process's lifetime.
class Tables {
 public:
  const TypeCheck& for_type(const Descriptor& type) {
    std::lock_guard lock(mu_);
    return build(type);
  }

 private:
  TypeCheck& build(const Descriptor& type) {
    auto [it, fresh] = tables_.try_emplace(&type);
    if (!fresh) return *it->second;
    it->second = std::make_unique<TypeCheck>();
    TypeCheck& table = *it->second;
    int max = 0;
    for (int i = 0; i < type.field_count(); i++) max = std::max(max, type.field(i)->number());
    // Field numbers can be large (up to 2^29); a sparse type stays unknown
    // past a bound, which only loosens the check for those fields.
    table.by_number.resize(static_cast<size_t>(std::min(max, 4096)) + 1);
    for (int i = 0; i < type.field_count(); i++) {
      const FieldDescriptor* f = type.field(i);
      if (f->number() > 4096) continue;
      FieldCheck& check = table.by_number[static_cast<size_t>(f->number())];
      if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
        check.payload = Payload::kMessage;
        check.message = &build(*f->message_type());
      } else if (f->type() == FieldDescriptor::TYPE_STRING && f->file()->syntax() == FileDescriptor::SYNTAX_PROTO3) {
        check.payload = Payload::kUtf8;
      } else if (f->is_repeated() && f->is_packable()) {
        check.payload = packed_payload(f->type());
      }
    }
    return table;
  }

  std::mutex mu_;
  std::map<const Descriptor*, std::unique_ptr<TypeCheck>> tables_;
};

Tables& tables() {
  static Tables* t = new Tables();  // never destroyed: calls may run during exit
  return *t;
}

class Reader {
 public:
  Reader(const uint8_t* p, const uint8_t* end) : p_(p), end_(end) {}
  bool at_end() const { return p_ == end_; }

  // At most 10 bytes, as libprotobuf reads them.
  bool varint(uint64_t* v) {
    uint64_t result = 0;
    for (int i = 0; i < 10; i++) {
      if (p_ == end_) return false;
      uint8_t b = *p_++;
      result |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool skip(uint64_t n) {
    if (n > static_cast<uint64_t>(end_ - p_)) return false;
    p_ += n;
    return true;
  }
  // The next `n` bytes as a sub-reader, skipped here.
  bool take(uint64_t n, Reader* sub) {
    if (n > static_cast<uint64_t>(end_ - p_)) return false;
    *sub = Reader(p_, p_ + n);
    p_ += n;
    return true;
  }
  const uint8_t* data() const { return p_; }
  size_t size() const { return static_cast<size_t>(end_ - p_); }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

bool valid_utf8(const uint8_t* p, size_t n) {
  // Almost every string on this path is ASCII: eight bytes at a time.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    if (word & 0x8080808080808080ULL) break;
  }
  for (; i < n && p[i] < 0x80; i++) {
  }
  return i == n || google::protobuf::internal::IsStructurallyValidUTF8(reinterpret_cast<const char*>(p + i),
                                                                       static_cast<int>(n - i));
}

bool check_fields(Reader& in, const TypeCheck* type, int depth, uint32_t group);

bool check_payload(Reader& payload, const FieldCheck& field, int depth) {
  switch (field.payload) {
    case Payload::kAny:
      return true;
    case Payload::kMessage:
      return check_fields(payload, field.message, depth + 1, 0);
    case Payload::kUtf8:
      return valid_utf8(payload.data(), payload.size());
    case Payload::kPackedVarint: {
      uint64_t v = 0;
      while (!payload.at_end()) {
        if (!payload.varint(&v)) return false;
      }
      return true;
    }
    case Payload::kPacked4:
      return payload.size() % 4 == 0;
    case Payload::kPacked8:
      return payload.size() % 8 == 0;
  }
  return false;
}

// The fields of one message (`type`), or of an unknown group (`type` null,
// `group` its field number, ended by the matching END_GROUP tag).
bool check_fields(Reader& in, const TypeCheck* type, int depth, uint32_t group) {
  if (depth > kMaxDepth) return false;
  static const TypeCheck kNoFields;
  if (type == nullptr) type = &kNoFields;
  while (!in.at_end()) {
    uint64_t tag = 0;
    if (!in.varint(&tag) || tag > UINT32_MAX) return false;
    const uint32_t number = static_cast<uint32_t>(tag) >> 3;
    if (number == 0) return false;
    uint64_t v = 0;
    switch (static_cast<uint32_t>(tag) & 7) {
      case WFL::WIRETYPE_VARINT:
        if (!in.varint(&v)) return false;
        break;
      case WFL::WIRETYPE_FIXED64:
        if (!in.skip(8)) return false;
        break;
      case WFL::WIRETYPE_FIXED32:
        if (!in.skip(4)) return false;
        break;
      case WFL::WIRETYPE_LENGTH_DELIMITED: {
        Reader payload(nullptr, nullptr);
        if (!in.varint(&v) || v > INT32_MAX || !in.take(v, &payload)) return false;
        if (!check_payload(payload, *type->field(number), depth)) return false;
        break;
      }
      case WFL::WIRETYPE_START_GROUP:
        // No proto3 field is a group: an unknown one, which must still be
        // well formed.
        if (!check_fields(in, nullptr, depth + 1, number)) return false;
        break;
      case WFL::WIRETYPE_END_GROUP:
        return number == group;  // anywhere else, libprotobuf fails the parse
      default:
        return false;
    }
  }
  return group == 0;  // an open group at the end does not parse
}

}  // namespace
}  // namespace wire_detail

WireCheck::WireCheck(const google::protobuf::Descriptor& type) : type_(&wire_detail::tables().for_type(type)) {}

bool WireCheck::parses(const grpc::ByteBuffer& bytes) const {
  if (!bytes.Valid()) return false;  // no message at all
  grpc::Slice slice;
  // One slice for a typical reply; a large one is copied together.
  if (!bytes.TrySingleSlice(&slice).ok() && !bytes.DumpToSingleSlice(&slice).ok()) return false;
  return parses(std::string_view(reinterpret_cast<const char*>(slice.begin()), slice.size()));
}

bool WireCheck::parses(std::string_view bytes) const {
  auto* begin = reinterpret_cast<const uint8_t*>(bytes.data());
  wire_detail::Reader in(begin, begin + bytes.size());
  return wire_detail::check_fields(in, type_, 0, 0);
}

}  // namespace owrap
