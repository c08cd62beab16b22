#include "plan/string_maps.h"

#include "compute_driver.pb.h"

namespace owrap {

namespace v1 = openshell::compute::v1;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

namespace {

enum class Which { kNone, kSpecEnvironment, kLabels, kTemplateEnvironment };

Which which(const Message& m, const FieldDescriptor& f) {
  static const FieldDescriptor* const kSpecEnvironment =
      v1::DriverSandboxSpec::descriptor()->FindFieldByName("environment");
  static const FieldDescriptor* const kLabels = v1::DriverSandboxTemplate::descriptor()->FindFieldByName("labels");
  static const FieldDescriptor* const kTemplateEnvironment =
      v1::DriverSandboxTemplate::descriptor()->FindFieldByName("environment");
  // The generated classes themselves (not a dynamic message of the same type).
  if (&f == kSpecEnvironment && dynamic_cast<const v1::DriverSandboxSpec*>(&m)) return Which::kSpecEnvironment;
  if (&f == kLabels && dynamic_cast<const v1::DriverSandboxTemplate*>(&m)) return Which::kLabels;
  if (&f == kTemplateEnvironment && dynamic_cast<const v1::DriverSandboxTemplate*>(&m)) {
    return Which::kTemplateEnvironment;
  }
  return Which::kNone;
}

}  // namespace

StringMap* mutable_string_map(Message& m, const FieldDescriptor& f) {
  switch (which(m, f)) {
    case Which::kSpecEnvironment:
      return static_cast<v1::DriverSandboxSpec&>(m).mutable_environment();
    case Which::kLabels:
      return static_cast<v1::DriverSandboxTemplate&>(m).mutable_labels();
    case Which::kTemplateEnvironment:
      return static_cast<v1::DriverSandboxTemplate&>(m).mutable_environment();
    case Which::kNone:
      break;
  }
  return nullptr;
}

const StringMap* string_map(const Message& m, const FieldDescriptor& f) {
  switch (which(m, f)) {
    case Which::kSpecEnvironment:
      return &static_cast<const v1::DriverSandboxSpec&>(m).environment();
    case Which::kLabels:
      return &static_cast<const v1::DriverSandboxTemplate&>(m).labels();
    case Which::kTemplateEnvironment:
      return &static_cast<const v1::DriverSandboxTemplate&>(m).environment();
    case Which::kNone:
      break;
  }
  return nullptr;
}

}  // namespace owrap
