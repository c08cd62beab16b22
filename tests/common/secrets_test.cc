#include "common/secrets.h"

#include "compute_driver.pb.h"
#include "options.pb.h"
#include "secrets_test.pb.h"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>

namespace {

namespace v1 = openshell::compute::v1;
namespace st = openshell::compute::secrets_test;
using owrap::collect_secrets;
using owrap::may_hold_secrets;
using owrap::redact_secrets;
using owrap::scrubbed_copy;

const char* const kToken = "sandbox-token-AAAA";
const char* const kApiKey = "api-key-BBBB";
const char* const kPrivateKey = "private-key-CCCC";
const char* const kMapKey = "map-api-key-DDDD";
const char* const kPin = "deep-pin-EEEE";
const char* const kPing = "ping-secret-FFFF";
const char* const kSigning = "signing-key-GGGG";
const char* const kPassphrase = "passphrase-HHHH";
const char* const kAlgorithm = "ed25519";  // beneath a secret message field: a secret too
const std::vector<std::string> kAllSecrets = {kToken, kMapKey,  kApiKey,    kPrivateKey, kPin,
                                              kPing,  kSigning, kAlgorithm, kPassphrase};

v1::DriverSandbox sandbox_with_token(const std::string& id) {
  v1::DriverSandbox sb;
  sb.set_id(id);
  sb.mutable_spec()->set_sandbox_token(kToken);
  (*sb.mutable_spec()->mutable_environment())["HOME"] = "/home/sandbox";
  auto& dc = *sb.mutable_spec()->mutable_template_()->mutable_driver_config()->mutable_fields();
  dc["memory"].mutable_struct_value();
  return sb;
}

st::ExtendedCreateSandboxRequest extended_request() {
  st::ExtendedCreateSandboxRequest req;
  *req.mutable_sandbox() = sandbox_with_token("sb-1");
  auto* cred = req.add_credentials();
  cred->set_name("first");
  cred->set_api_key(kApiKey);
  cred->set_private_key(kPrivateKey);
  cred->set_serial(4242);
  req.add_credentials()->set_name("second, no key");
  req.mutable_keyring()->set_owner("ops");
  auto& by_name = *req.mutable_keyring()->mutable_by_name();
  by_name["prod"].set_name("prod-cred");
  by_name["prod"].set_api_key(kMapKey);
  auto* child = req.mutable_tree()->add_children()->add_children();
  child->set_label("leaf");
  child->set_pin(kPin);
  req.mutable_tree()->set_label("root");
  req.mutable_pong()->set_label("pong");
  req.mutable_pong()->mutable_ping()->set_ping_secret(kPing);
  req.mutable_signing()->set_algorithm(kAlgorithm);
  req.mutable_signing()->add_keys(kSigning);
  req.add_passphrases(kPassphrase);
  (*req.mutable_labels()->mutable_fields())["team"].set_string_value("blue");
  req.mutable_plain()->set_text("plain text");
  return req;
}

std::string json_of(const google::protobuf::Message& m) {
  std::string out;
  REQUIRE(google::protobuf::util::MessageToJsonString(m, &out).ok());
  return out;
}

}  // namespace

TEST_CASE("secret fields are known by the schema's option, at any depth", "[secrets]") {
  // Pong first: it reaches a secret only through a cycle (Pong -> Ping).
  CHECK(may_hold_secrets(*st::Pong::descriptor()));
  CHECK(may_hold_secrets(*st::Ping::descriptor()));
  CHECK(may_hold_secrets(*st::Keyring::descriptor()));  // through a map value
  CHECK(may_hold_secrets(*st::Node::descriptor()));
  CHECK(may_hold_secrets(*v1::CreateSandboxRequest::descriptor()));
  CHECK(may_hold_secrets(*v1::ValidateSandboxCreateRequest::descriptor()));
  CHECK_FALSE(may_hold_secrets(*v1::GetSandboxRequest::descriptor()));
  CHECK_FALSE(may_hold_secrets(*v1::CreateSandboxResponse::descriptor()));
  CHECK_FALSE(may_hold_secrets(*google::protobuf::Struct::descriptor()));
  CHECK_FALSE(may_hold_secrets(*st::Plain::descriptor()));
  CHECK(owrap::is_secret_field(*v1::DriverSandboxSpec::descriptor()->FindFieldByName("sandbox_token")));
  CHECK_FALSE(owrap::is_secret_field(*v1::DriverSandboxSpec::descriptor()->FindFieldByName("environment")));
}

TEST_CASE("collect_secrets finds every secret value of a message and nothing else", "[secrets]") {
  auto found = collect_secrets(extended_request());
  std::vector<std::string> sorted_found = found, expected = kAllSecrets;
  std::sort(sorted_found.begin(), sorted_found.end());
  std::sort(expected.begin(), expected.end());
  CHECK(sorted_found == expected);  // the int64 serial is scrubbed, not collected

  v1::CreateSandboxRequest create;
  *create.mutable_sandbox() = sandbox_with_token("sb-2");
  CHECK(collect_secrets(create) == std::vector<std::string>{kToken});
  create.mutable_sandbox()->mutable_spec()->clear_sandbox_token();
  CHECK(collect_secrets(create).empty());
  v1::GetSandboxRequest get;
  get.set_sandbox_id("sb-2");
  CHECK(collect_secrets(get).empty());
}

TEST_CASE("a scrubbed copy holds no secret and keeps everything else", "[secrets]") {
  const st::ExtendedCreateSandboxRequest original = extended_request();
  auto copy = scrubbed_copy(original);
  const auto& scrubbed = dynamic_cast<const st::ExtendedCreateSandboxRequest&>(*copy);

  std::string views[] = {scrubbed.SerializeAsString(), scrubbed.DebugString(), json_of(scrubbed)};
  for (const std::string& view : views) {
    for (const std::string& secret : kAllSecrets) CHECK(view.find(secret) == std::string::npos);
  }
  CHECK(scrubbed.sandbox().spec().sandbox_token().empty());
  CHECK(scrubbed.credentials(0).api_key().empty());
  CHECK(scrubbed.credentials(0).private_key().empty());
  CHECK(scrubbed.credentials(0).serial() == 0);
  CHECK(scrubbed.keyring().by_name().at("prod").api_key().empty());
  CHECK(scrubbed.tree().children(0).children(0).pin().empty());
  CHECK(scrubbed.pong().ping().ping_secret().empty());
  CHECK_FALSE(scrubbed.has_signing());
  CHECK(scrubbed.passphrases_size() == 0);

  // Everything else survives.
  CHECK(scrubbed.sandbox().id() == "sb-1");
  CHECK(scrubbed.sandbox().spec().environment().at("HOME") == "/home/sandbox");
  CHECK(scrubbed.sandbox().spec().template_().driver_config().fields().count("memory") == 1);
  CHECK(scrubbed.credentials(0).name() == "first");
  CHECK(scrubbed.credentials_size() == 2);
  CHECK(scrubbed.keyring().owner() == "ops");
  CHECK(scrubbed.keyring().by_name().at("prod").name() == "prod-cred");
  CHECK(scrubbed.tree().children(0).children(0).label() == "leaf");
  CHECK(scrubbed.pong().label() == "pong");
  CHECK(scrubbed.labels().fields().at("team").string_value() == "blue");
  CHECK(scrubbed.plain().text() == "plain text");

  // The original is untouched.
  CHECK(original.sandbox().spec().sandbox_token() == kToken);
  CHECK(original.keyring().by_name().at("prod").api_key() == kMapKey);
}

TEST_CASE("the JSON view of a scrubbed CreateSandboxRequest has no token", "[secrets]") {
  v1::CreateSandboxRequest create;
  *create.mutable_sandbox() = sandbox_with_token("sb-json");
  REQUIRE(json_of(create).find(kToken) != std::string::npos);  // the unscrubbed view would leak it
  std::string json = json_of(*scrubbed_copy(create));
  CHECK(json.find(kToken) == std::string::npos);
  CHECK(json.find("sandboxToken") == std::string::npos);
  CHECK(json.find("sb-json") != std::string::npos);
}

TEST_CASE("a scrubbed copy drops fields this build cannot read", "[secrets]") {
  // A newer peer's field (number 99 in Credential) might be its secret.
  st::Credential newer;
  newer.set_name("n");
  newer.GetReflection()->MutableUnknownFields(&newer)->AddLengthDelimited(99, "unknown-secret-IIII");
  REQUIRE(newer.SerializeAsString().find("unknown-secret-IIII") != std::string::npos);
  auto copy = scrubbed_copy(newer);
  CHECK(copy->SerializeAsString().find("unknown-secret-IIII") == std::string::npos);
  CHECK(dynamic_cast<const st::Credential&>(*copy).name() == "n");
}

namespace {

// Adds an unknown field to `m` and to every message set beneath it (the
// values of a Struct included), each with its own marker; returns how many.
int add_unknown_everywhere(google::protobuf::Message& m, const std::string& where) {
  const auto& r = *m.GetReflection();
  r.MutableUnknownFields(&m)->AddLengthDelimited(9999, "unknown-marker@" + where);
  int added = 1;
  if (auto* st = dynamic_cast<google::protobuf::Struct*>(&m)) {
    for (auto& [key, value] : *st->mutable_fields()) added += add_unknown_everywhere(value, where + "/" + key);
    return added;
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r.ListFields(m, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE || f->is_map()) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < r.FieldSize(m, f); i++) {
        added += add_unknown_everywhere(*r.MutableRepeatedMessage(&m, f, i), where + "/" + f->name());
      }
    } else {
      added += add_unknown_everywhere(*r.MutableMessage(&m, f), where + "/" + f->name());
    }
  }
  return added;
}

std::string varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>(v | 0x80));
  out.push_back(static_cast<char>(v));
  return out;
}
std::string length_delimited(int number, const std::string& payload) {
  return varint(static_cast<uint64_t>(number) << 3 | 2) + varint(payload.size()) + payload;
}

}  // namespace

TEST_CASE("a scrubbed copy drops unknown fields at every depth and keeps every known one", "[secrets]") {
  v1::DriverSandbox sb = sandbox_with_token("sb-deep");
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  tmpl->set_image("img");
  (*tmpl->mutable_labels())["team"] = "blue";
  tmpl->mutable_resources()->set_cpu_limit("1");
  auto& dc = *tmpl->mutable_driver_config()->mutable_fields();
  auto& pod = *dc["memory"].mutable_struct_value()->mutable_fields();
  pod["pool"].set_string_value("sandboxes");
  auto* list = pod["tolerations"].mutable_list_value();
  (*list->add_values()->mutable_struct_value()->mutable_fields())["key"].set_string_value("k");
  list->add_values()->set_number_value(3);
  sb.mutable_status()->add_conditions()->set_type("Ready");
  sb.mutable_status()->add_conditions()->set_type("Scheduled");
  // A label whose map entry carries a field of its own: parsed, it is dropped with the entry's wrapper.
  std::string entry =
      length_delimited(1, "tier") + length_delimited(2, "gold") + length_delimited(7, "unknown-marker@entry");
  auto label_number = v1::DriverSandboxTemplate::descriptor()->FindFieldByName("labels")->number();
  REQUIRE(tmpl->MergeFromString(length_delimited(label_number, entry)));
  REQUIRE(tmpl->labels().at("tier") == "gold");

  v1::DriverSandbox marked = sb;
  REQUIRE(add_unknown_everywhere(marked, "") >= 12);
  REQUIRE(marked.SerializeAsString().find("/tolerations/list_value/values/struct_value/key") != std::string::npos);

  // What protobuf's own walk leaves, with the token cleared.
  v1::DriverSandbox expected = marked;
  expected.DiscardUnknownFields();
  expected.mutable_spec()->clear_sandbox_token();

  auto copy = scrubbed_copy(marked);
  const auto& got = dynamic_cast<const v1::DriverSandbox&>(*copy);
  CHECK(got.SerializeAsString().find("unknown-marker") == std::string::npos);
  CHECK(got.SerializeAsString().find(kToken) == std::string::npos);
  CHECK(google::protobuf::util::MessageDifferencer::Equals(got, expected));
  CHECK(got.spec().template_().labels().at("team") == "blue");
  CHECK(got.spec().template_().labels().at("tier") == "gold");
  CHECK(got.spec().environment().at("HOME") == "/home/sandbox");
  CHECK(got.status().conditions_size() == 2);
  // The original is untouched.
  CHECK(marked.SerializeAsString().find("unknown-marker@/status/conditions") != std::string::npos);
}

TEST_CASE("a dynamic message of the contract is scrubbed as the generated one", "[secrets]") {
  // The walk takes each message's type from the field it came through; a
  // dynamic message must come out as the generated one. (Unknown fields
  // inside a dynamic Struct's values are left out: protobuf's own
  // DiscardUnknownFields, which a dynamic Struct falls back to, skips a map
  // held in its repeated form; the generated types the wrapper uses walk
  // Struct values themselves.)
  v1::DriverSandbox sb = sandbox_with_token("sb-dyn");
  sb.mutable_spec()->mutable_template_()->mutable_resources()->set_cpu_limit("1");
  sb.mutable_status()->add_conditions()->set_type("Ready");
  sb.mutable_spec()->mutable_template_()->clear_driver_config();
  REQUIRE(add_unknown_everywhere(sb, "") >= 6);
  auto& dc = *sb.mutable_spec()->mutable_template_()->mutable_driver_config()->mutable_fields();
  (*dc["memory"].mutable_struct_value()->mutable_fields())["pool"].set_string_value("sandboxes");

  google::protobuf::DynamicMessageFactory factory;
  std::unique_ptr<google::protobuf::Message> dynamic(factory.GetPrototype(v1::DriverSandbox::descriptor())->New());
  REQUIRE(dynamic->ParseFromString(sb.SerializeAsString()));
  auto from_dynamic = scrubbed_copy(*dynamic);
  auto from_generated = scrubbed_copy(sb);
  const std::string bytes = from_dynamic->SerializeAsString();
  CHECK(bytes.find("unknown-marker") == std::string::npos);
  CHECK(bytes.find(kToken) == std::string::npos);
  v1::DriverSandbox reread;
  REQUIRE(reread.ParseFromString(bytes));
  CHECK(google::protobuf::util::MessageDifferencer::Equals(reread, *from_generated));
  CHECK(reread.spec().template_().driver_config().fields().at("memory").struct_value().fields().count("pool") == 1);
}

TEST_CASE("redact_secrets scrubs every secret from free text", "[secrets]") {
  std::string text = std::string("delegate said: token ") + kToken + " key " + kApiKey + " again " + kToken;
  std::string out = redact_secrets(text, collect_secrets(extended_request()));
  CHECK(out == "delegate said: token [REDACTED] key [REDACTED] again [REDACTED]");
  // One secret inside another leaves no tail; a secret never matches inside "[REDACTED]".
  CHECK(redact_secrets("x abcdef y", {"abc", "abcdef", "RED"}) == "x [REDACTED] y");
  CHECK(redact_secrets("nothing here", {}) == "nothing here");
  CHECK(redact_secrets("nothing here", {""}) == "nothing here");
}

TEST_CASE("collecting secrets costs little on every call", "[secrets][cost]") {
  v1::CreateSandboxRequest create;
  *create.mutable_sandbox() = sandbox_with_token("sb-cost");
  auto& labels = *create.mutable_sandbox()->mutable_spec()->mutable_template_()->mutable_labels();
  for (int i = 0; i < 8; i++) labels["label-" + std::to_string(i)] = "value";
  v1::GetSandboxRequest get;
  get.set_sandbox_id("sb-cost");
  auto per_call_ns = [](const google::protobuf::Message& m) {
    constexpr int kRounds = 200000;
    size_t sink = 0;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; i++) sink += collect_secrets(m).size();
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    REQUIRE((sink > 0) == may_hold_secrets(*m.GetDescriptor()));
    return static_cast<double>(ns) / kRounds;
  };
  double create_ns = per_call_ns(create), get_ns = per_call_ns(get);
  std::printf("collect_secrets: CreateSandboxRequest %.0f ns/call, GetSandboxRequest %.0f ns/call\n", create_ns,
              get_ns);
  // Generous bounds for a loaded CI box; the figures above are what matters.
  CHECK(create_ns < 20000);
  CHECK(get_ns < 5000);
}

namespace {

// Every message field of the contract's DriverSandbox set, Struct values
// included, the token too, and an unknown field in each message.
v1::DriverSandbox sandbox_with_everything() {
  v1::DriverSandbox sb = sandbox_with_token("sb-all");
  sb.set_name("n");
  sb.set_workspace("w");
  auto* spec = sb.mutable_spec();
  spec->set_log_level("debug");
  spec->add_command("sh");
  spec->mutable_resource_requirements()->mutable_gpu()->set_count(1);
  auto* tmpl = spec->mutable_template_();
  tmpl->set_image("img");
  (*tmpl->mutable_labels())["team"] = "blue";
  (*tmpl->mutable_environment())["B"] = "2";
  tmpl->mutable_resources()->set_cpu_limit("1");
  (*tmpl->mutable_platform_config()->mutable_fields())["zone"].set_string_value("a");
  auto& pod = *(*tmpl->mutable_driver_config()->mutable_fields())["pod"].mutable_struct_value()->mutable_fields();
  (*pod["selector"].mutable_struct_value()->mutable_fields())["pool"].set_string_value("p");
  pod["list"].mutable_list_value()->add_values()->set_string_value("x");
  sb.mutable_status()->set_sandbox_name("s");
  sb.mutable_status()->add_conditions()->set_type("Ready");
  sb.mutable_status()->add_conditions()->set_type("Scheduled");
  return sb;
}

// The contract's files, copied into a pool of their own, with `change`
// applied to compute_driver.proto: what a newer contract would look like.
template <class Change>
const google::protobuf::Descriptor* changed_contract(google::protobuf::DescriptorPool& pool, Change change) {
  const auto* options = google::protobuf::DescriptorPool::generated_pool()->FindFileByName("options.proto");
  REQUIRE(options != nullptr);
  for (const google::protobuf::FileDescriptor* file : {google::protobuf::DescriptorProto::descriptor()->file(),
                                                       google::protobuf::Struct::descriptor()->file(), options}) {
    google::protobuf::FileDescriptorProto proto;
    file->CopyTo(&proto);
    REQUIRE(pool.BuildFile(proto) != nullptr);
  }
  google::protobuf::FileDescriptorProto proto;
  v1::DriverSandbox::descriptor()->file()->CopyTo(&proto);
  change(proto);
  REQUIRE(pool.BuildFile(proto) != nullptr);
  return pool.FindMessageTypeByName("openshell.compute.v1.DriverSandbox");
}

google::protobuf::DescriptorProto& message_named(google::protobuf::FileDescriptorProto& file, const std::string& name) {
  for (auto& m : *file.mutable_message_type()) {
    if (m.name() == name) return m;
  }
  FAIL("no message " << name);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("the contract's DriverSandbox is scrubbed through its accessors as the generic walk scrubs it", "[secrets]") {
  v1::DriverSandbox sb = sandbox_with_everything();
  REQUIRE(add_unknown_everywhere(sb, "") >= 16);
  REQUIRE(owrap::sandbox_walk_fits(*v1::DriverSandbox::descriptor()));

  auto fast = scrubbed_copy(sb);  // the generated walk
  // The same sandbox inside another message: the generic walk reaches it.
  v1::CreateSandboxRequest wrapped;
  *wrapped.mutable_sandbox() = sb;
  auto generic = scrubbed_copy(wrapped);
  const auto& by_generic = dynamic_cast<const v1::CreateSandboxRequest&>(*generic).sandbox();

  const std::string bytes = fast->SerializeAsString();
  CHECK(bytes.find("unknown-marker") == std::string::npos);
  CHECK(bytes.find(kToken) == std::string::npos);
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*fast, by_generic));
  v1::DriverSandbox expected = sb;
  expected.DiscardUnknownFields();
  expected.mutable_spec()->clear_sandbox_token();
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*fast, expected));
}

TEST_CASE("the accessor walk is kept for the schema it was written for", "[secrets]") {
  CHECK(owrap::sandbox_walk_fits(*v1::DriverSandbox::descriptor()));
  auto secret = [](google::protobuf::FieldDescriptorProto& f) {
    f.mutable_options()->SetExtension(openshell::options::v1::secret, true);
  };
  SECTION("an unchanged copy fits") {
    google::protobuf::DescriptorPool pool;
    CHECK(owrap::sandbox_walk_fits(*changed_contract(pool, [](auto&) {})));
  }
  SECTION("a second secret field") {
    google::protobuf::DescriptorPool pool;
    auto* type = changed_contract(pool, [&](google::protobuf::FileDescriptorProto& file) {
      auto* f = message_named(file, "DriverCondition").add_field();
      f->set_name("credential");
      f->set_number(40);
      f->set_type(google::protobuf::FieldDescriptorProto::TYPE_STRING);
      f->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
      secret(*f);
    });
    REQUIRE(owrap::may_hold_secrets(*type));
    CHECK_FALSE(owrap::sandbox_walk_fits(*type));
  }
  SECTION("an existing field marked secret") {
    google::protobuf::DescriptorPool pool;
    auto* type = changed_contract(pool, [&](google::protobuf::FileDescriptorProto& file) {
      for (auto& f : *message_named(file, "DriverSandbox").mutable_field()) {
        if (f.name() == "workspace") secret(f);
      }
    });
    CHECK_FALSE(owrap::sandbox_walk_fits(*type));
  }
  SECTION("a message field the walk does not descend into") {
    google::protobuf::DescriptorPool pool;
    auto* type = changed_contract(pool, [&](google::protobuf::FileDescriptorProto& file) {
      auto* f = message_named(file, "DriverSandboxStatus").add_field();
      f->set_name("last_condition");
      f->set_number(40);
      f->set_type(google::protobuf::FieldDescriptorProto::TYPE_MESSAGE);
      f->set_type_name(".openshell.compute.v1.DriverCondition");
      f->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
    });
    CHECK_FALSE(owrap::sandbox_walk_fits(*type));
  }
  SECTION("a field repeated that was singular") {
    google::protobuf::DescriptorPool pool;
    auto* type = changed_contract(pool, [&](google::protobuf::FileDescriptorProto& file) {
      for (auto& f : *message_named(file, "DriverSandboxTemplate").mutable_field()) {
        if (f.name() == "resources") f.set_label(google::protobuf::FieldDescriptorProto::LABEL_REPEATED);
      }
    });
    CHECK_FALSE(owrap::sandbox_walk_fits(*type));
  }
}
