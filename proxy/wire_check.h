// Whether bytes would parse as a message type, decided without building the
// message: the wire structure, every nested message of a known field, and
// the UTF-8 of proto3 strings, as libprotobuf's parser checks them. The
// unary relay uses it for replies it passes on as bytes (no stage sees
// them), where parsing only to throw the message away cost about a tenth of
// the wrapper's instructions per call.
#pragma once

#include <google/protobuf/descriptor.h>
#include <grpcpp/support/byte_buffer.h>

#include <string_view>

namespace owrap {

namespace wire_detail {
struct TypeCheck;
}

class WireCheck {
 public:
  // Works out once which fields of `type` (and of every type it reaches)
  // need a look inside; kept for the process's lifetime.
  explicit WireCheck(const google::protobuf::Descriptor& type);
  bool parses(const grpc::ByteBuffer& bytes) const;
  bool parses(std::string_view bytes) const;

 private:
  const wire_detail::TypeCheck* type_;
};

}  // namespace owrap
