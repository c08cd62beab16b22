#include "common/message_fields.h"

#include <unordered_map>

namespace owrap {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

const MessageFields& message_fields(const Descriptor& type) {
  // Node-based: references stay valid while a walk adds types.
  thread_local std::unordered_map<const Descriptor*, MessageFields> all;
  if (auto it = all.find(&type); it != all.end()) return it->second;
  MessageFields out;
  out.extensions = type.extension_range_count() > 0;
  for (int i = 0; i < type.field_count(); i++) {
    const FieldDescriptor* f = type.field(i);
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_map()) {
      out.message_valued_map =
          out.message_valued_map || f->message_type()->map_value()->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    } else {
      (f->is_repeated() ? out.repeated : out.singular).push_back(f);
    }
  }
  return all.emplace(&type, std::move(out)).first->second;
}

}  // namespace owrap
