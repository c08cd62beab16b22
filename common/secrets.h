// Secrets by the schema: a field marked `[(openshell.options.v1.secret) =
// true]` (proto/options.proto) never leaves the wire path. Views of a message
// that go anywhere else (logs today; hook inputs and journal rows next) are
// made with scrubbed_copy(), and free-form text that may echo what was sent
// (a delegate's error message) is cleaned with redact_secrets() using the
// values collect_secrets() found in the request.
//
// Everything works by reflection on any message type, so a field marked in a
// newer contract is honoured without code naming it. Which fields of a type
// can lead to a secret is worked out once per descriptor and cached: a type
// that cannot hold one costs a single lookup.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace owrap {

// True when `field` carries the secret option.
bool is_secret_field(const google::protobuf::FieldDescriptor& field);

// True when a message of this type, or one nested in it at any depth
// (singular, repeated, map values), can hold a secret field.
bool may_hold_secrets(const google::protobuf::Descriptor& type);

// Clears every secret field of `message` in place, at any depth. A secret
// field of message type is cleared whole. Unknown fields are discarded too:
// a field this build cannot read is one it cannot prove harmless.
void scrub_secrets(google::protobuf::Message& message);

// Whether scrub_secrets() may walk the contract's DriverSandbox through its
// generated accessors: true while every message field, secret field,
// extension range and map of every type `sandbox` reaches is one that walk
// knows. Takes the descriptor so that tests can hand it a changed schema.
bool sandbox_walk_fits(const google::protobuf::Descriptor& sandbox);

// A copy of `message` with scrub_secrets() applied; the original is untouched.
std::unique_ptr<google::protobuf::Message> scrubbed_copy(const google::protobuf::Message& message);

// The non-empty string and bytes values of every secret field set in
// `message` (every string beneath a secret field of message type), in field
// order. Secret fields of other scalar types are scrubbed but not collected:
// a number cannot be told apart from other numbers in free text.
std::vector<std::string> collect_secrets(const google::protobuf::Message& message);

// Replaces every occurrence of each of `secrets` in `text` with
// "[REDACTED]", longest first so one secret inside another leaves no tail.
std::string redact_secrets(std::string text, const std::vector<std::string>& secrets);

}  // namespace owrap
