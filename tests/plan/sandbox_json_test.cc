// The plan's JSON conversions (plan/sandbox_json.h) against protobuf's own
// util (owrap::protobuf_json, the code they replaced): same JSON, same
// verdicts, same error texts, same messages. Each differential also checks
// that the reflection walks (plan/proto_json.h) answered themselves where
// they should, so a test cannot pass only because everything fell back.
#include "plan/sandbox_json.h"
#include "plan/write_back.h"

#include "compute_driver.pb.h"
#include "future.pb.h"
#include "hooks/builtin/builtin_hook.h"
#include "json_kinds_test.pb.h"
#include "plan/proto_json.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

using namespace owrap;
using nlohmann::json;
namespace v1 = openshell::compute::v1;
namespace jt = openshell::compute::json_test;
using google::protobuf::Message;
using google::protobuf::Value;

namespace {

std::string bytes_of(const Message& m) {
  return canonical_bytes(m);
}

std::string dump_of(const Result<json>& r) {
  return r ? r.value().dump() : "error: " + r.error();
}

// Equal dumps still hide which number type nlohmann holds ("5" is unsigned
// as parsed, signed as built): callers may ask, so the types must match too.
bool same_types(const json& a, const json& b) {
  if (a.type() != b.type()) return false;
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
      if (ia.key() != ib.key() || !same_types(*ia, *ib)) return false;
    }
  } else if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++) {
      if (!same_types(a[i], b[i])) return false;
    }
  }
  return true;
}

// message_to_json must give protobuf's JSON; returns whether the walk (not
// the fallback) produced it.
bool same_json(const Message& m) {
  auto fast = message_to_json(m);
  auto ref = protobuf_json::message_to_json(m);
  INFO(m.DebugString());
  REQUIRE(dump_of(fast) == dump_of(ref));
  if (fast && ref && !ref.value().is_discarded()) {
    REQUIRE(fast.value() == ref.value());
    REQUIRE(same_types(fast.value(), ref.value()));
  }
  json walked;
  bool handled = proto_json::write_message(m, walked);
  if (handled) {
    REQUIRE(walked.dump() == dump_of(ref));
    REQUIRE(same_types(walked, ref.value()));
  }
  return handled;
}

bool same_value_json(const Value& v) {
  json fast = value_to_json(v);
  json ref = protobuf_json::value_to_json(v);
  INFO(v.DebugString());
  REQUIRE(fast.dump() == ref.dump());
  REQUIRE(same_types(fast, ref));
  json walked;
  return proto_json::write_value(v, walked);
}

// protobuf logs every string that is not UTF-8 and every JSON writer it
// abandons; the tests make many on purpose.
class QuietProtobuf {
 public:
  QuietProtobuf() : old_(google::protobuf::SetLogHandler(nullptr)) {}
  ~QuietProtobuf() { google::protobuf::SetLogHandler(old_); }

 private:
  google::protobuf::LogHandler* old_;
};

struct Verdict {
  bool ok = false;
  std::string text;  // the error, the exception or the message's bytes
};

template <class M>
Verdict judge(Result<bool> (*parse)(const json&, Message&), const json& doc) {
  M out;
  try {
    auto r = parse(doc, out);
    if (!r) return {false, r.error()};
    return {true, bytes_of(out)};
  } catch (const std::exception& e) {
    return {false, std::string("exception: ") + e.what()};
  }
}

// json_to_message must judge `doc` as protobuf_json::json_to_message does,
// with the same error text or the same message; returns whether the walk
// read it itself.
template <class M>
bool same_verdict(const json& doc) {
  Verdict fast = judge<M>(&json_to_message, doc);
  Verdict ref = judge<M>(&protobuf_json::json_to_message, doc);
  INFO((doc.is_discarded() ? "<discarded>" : doc.dump(-1, ' ', false, json::error_handler_t::replace)));
  INFO("reference: " << (ref.ok ? "accepted" : ref.text));
  REQUIRE(fast.ok == ref.ok);
  REQUIRE(fast.text == ref.text);
  M walked;
  bool handled = doc.is_object() && proto_json::read_message(doc, walked);
  if (handled) {
    REQUIRE(ref.ok);
    REQUIRE(bytes_of(walked) == ref.text);
  }
  return handled;
}

template <class M>
bool same_verdict(const char* text) {
  return same_verdict<M>(json::parse(text));
}

bool round_trips(const Message& m) {
  auto doc = message_to_json(m);
  REQUIRE(doc.ok());
  std::unique_ptr<Message> back(m.New());
  REQUIRE(json_to_message(doc.value(), *back).ok());
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differ;
  differ.set_field_comparator(&comparator);
  std::string diff;
  differ.ReportDifferencesToString(&diff);
  bool same = differ.Compare(m, *back);
  INFO(diff);
  return same;
}

v1::DriverSandbox full_sandbox() {
  v1::DriverSandbox sb;
  sb.set_id("sb-1");
  sb.set_name("n\xC3\xA4me \xF0\x9F\x98\x80 \"quoted\" \\ / \b\f\n\r\t \x01\x1F\x7F <tag> & \xE2\x80\xA8");
  sb.set_namespace_("default");
  sb.set_workspace("ws");
  auto* spec = sb.mutable_spec();
  spec->set_log_level("debug");
  (*spec->mutable_environment())["A"] = "1";
  (*spec->mutable_environment())[""] = "empty key";
  (*spec->mutable_environment())["UNICODE_\xE2\x82\xAC"] = "\xE2\x82\xAC";
  spec->set_sandbox_token("jwt-secret");
  spec->add_command("sleep");
  spec->add_command("");
  spec->add_command("1");
  spec->set_tty(true);
  spec->mutable_resource_requirements()->mutable_gpu()->set_count(0);  // optional: present though zero
  auto* tmpl = spec->mutable_template_();
  tmpl->set_image("ghcr.io/example/sandbox:1");
  tmpl->set_agent_socket_path("/run/agent.sock");
  (*tmpl->mutable_labels())["team"] = "blue";
  (*tmpl->mutable_environment())["X"] = "y";
  auto* res = tmpl->mutable_resources();
  res->set_cpu_request("500m");
  res->set_cpu_limit("1");
  res->set_memory_request("512Mi");
  res->set_memory_limit("1Gi");
  (*tmpl->mutable_platform_config()->mutable_fields())["runtime_class_name"].set_string_value("gvisor");
  REQUIRE(google::protobuf::util::JsonStringToMessage(
              R"({"pod": {"node_selector": {"pool": "sandboxes"},
                          "tolerations": [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}],
                          "replicas": 3, "ratio": 0.25, "big": 1e300, "neg": -7, "tiny": 5e-324,
                          "nothing": null, "yes": true, "no": false, "empty": {}, "list": [],
                          "nested": [[1, [2, [3]]], {"a": {"b": {"c": "d"}}}]},
                  "keep": true})",
              tmpl->mutable_driver_config())
              .ok());
  auto* status = sb.mutable_status();
  status->set_sandbox_name("s");
  status->set_instance_id("i");
  status->set_agent_fd("3");
  status->set_sandbox_fd("4");
  status->set_deleting(true);
  for (int i = 0; i < 2; i++) {
    auto* c = status->add_conditions();
    c->set_type("Ready");
    c->set_status(i ? "True" : "False");
    c->set_reason("r");
    c->set_message("m");
    c->set_last_transition_time("2026-11-26T00:00:00Z");
  }
  return sb;
}

const std::vector<double>& edge_doubles() {
  static const std::vector<double> v = {0.0,
                                        -0.0,
                                        1.0,
                                        -1.0,
                                        3.0,
                                        0.1,
                                        0.25,
                                        -2.5,
                                        1e15,
                                        1e16,
                                        123456789012345678.0,
                                        9007199254740993.0,
                                        1e20,
                                        1e21,
                                        1e-7,
                                        1e-300,
                                        5e-324,
                                        1.7976931348623157e308,
                                        -1.7976931348623157e308,
                                        2.2250738585072014e-308,
                                        3.4028234663852886e38,
                                        1.0 / 3.0,
                                        std::numeric_limits<double>::quiet_NaN(),
                                        -std::numeric_limits<double>::quiet_NaN(),
                                        std::numeric_limits<double>::infinity(),
                                        -std::numeric_limits<double>::infinity()};
  return v;
}

const std::vector<float>& edge_floats() {
  static const std::vector<float> v = {0.0f,
                                       -0.0f,
                                       1.0f,
                                       0.1f,
                                       -0.3f,
                                       16777217.0f,
                                       1e10f,
                                       3.4028235e38f,
                                       -3.4028235e38f,
                                       1.17549435e-38f,
                                       1e-45f,
                                       1.0f / 3.0f,
                                       std::numeric_limits<float>::quiet_NaN(),
                                       std::numeric_limits<float>::infinity(),
                                       -std::numeric_limits<float>::infinity()};
  return v;
}

const std::vector<std::string>& edge_strings() {
  static const std::vector<std::string> v = {
      "",
      "plain",
      " spaced ",
      "\"\\/",
      "\b\f\n\r\t",
      std::string("nul\0inside", 10),
      "\x01\x02\x1F\x7F",
      "<script>&amp;</script>",
      "\xC3\xA4\xC3\xB6\xC3\xBC",
      "\xE2\x80\xA8\xE2\x80\xA9",
      "\xEF\xBB\xBF bom",
      "\xF0\x9F\x98\x80 emoji",
      "\xF4\x8F\xBF\xBF max",
      "\xE0\xA0\x80 first 3-byte",
      "12345",
      "NaN",
      "Infinity",
      "true",
      "null",
      "\xFF invalid",                 // not UTF-8: protobuf blanks it
      "\xED\xA0\x80 surrogate",       // not UTF-8 either
      "\xC0\xAF overlong",            // nor this
      "\xF4\x90\x80\x80 beyond max",  // nor this
      "\xE2\x82 truncated",
  };
  return v;
}

// ------------------------------------------------------------ random messages

const std::set<std::string> kFallbackFields = {"aliased", "custom", "nv", "r_nv", "c_nv"};

class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}

  jt::AllKinds all_kinds(int depth = 0) {
    jt::AllKinds m;
    auto* r = m.GetReflection();
    const auto* d = m.GetDescriptor();
    for (int i = 0; i < d->field_count(); i++) {
      const auto* f = d->field(i);
      if (!chance(0.35)) continue;
      // Fields the walk always leaves to protobuf (an aliased enum, a custom
      // json_name, NullValue enums, read as null): rarer, so that most
      // messages are walked.
      if (kFallbackFields.count(f->name()) && !chance(0.15)) continue;
      if (f->is_map()) {
        int n = pick(4);
        for (int k = 0; k < n; k++) map_entry(m, *f, depth);
      } else if (f->is_repeated()) {
        int n = pick(4);
        for (int k = 0; k < n; k++) element(m, *r, *f, true, depth);
      } else {
        element(m, *r, *f, false, depth);
      }
    }
    return m;
  }

  Value value(int depth) {
    Value v;
    int kind = pick(depth > 3 ? 5 : 8);
    switch (kind) {
      case 0:
        v.set_null_value(google::protobuf::NULL_VALUE);
        break;
      case 1:
        v.set_number_value(number());
        break;
      case 2:
        v.set_string_value(text());
        break;
      case 3:
        v.set_bool_value(chance(0.5));
        break;
      case 4:
        if (chance(0.97)) v.set_number_value(static_cast<double>(static_cast<int64_t>(rng_()) % 100000));
        break;  // else: no kind set
      case 5:
      case 6: {
        auto* fields = v.mutable_struct_value()->mutable_fields();
        int n = pick(4);
        for (int i = 0; i < n; i++) (*fields)[text()] = value(depth + 1);
        break;
      }
      default: {
        auto* list = v.mutable_list_value();
        int n = pick(4);
        for (int i = 0; i < n; i++) *list->add_values() = value(depth + 1);
        break;
      }
    }
    return v;
  }

  std::string text() {
    static const std::vector<std::string> pieces = {"a",
                                                    "Z",
                                                    "_",
                                                    "-",
                                                    "0",
                                                    " ",
                                                    "\"",
                                                    "\\",
                                                    "/",
                                                    "\n",
                                                    "\t",
                                                    "\x01",
                                                    "\x1F",
                                                    "\x7F",
                                                    "<",
                                                    ">",
                                                    "&",
                                                    "=",
                                                    "\xC3\xA4",
                                                    "\xE2\x82\xAC",
                                                    "\xE2\x80\xA8",
                                                    "\xF0\x9F\x98\x80",
                                                    "\xEF\xBF\xBF"};
    if (chance(0.01)) return "\xFF";  // now and then not UTF-8
    std::string s;
    int n = pick(6);
    for (int i = 0; i < n; i++) s += pieces[pick(static_cast<int>(pieces.size()))];
    return s;
  }

  std::string bytes() {
    std::string s;
    int n = pick(9);
    for (int i = 0; i < n; i++) s.push_back(static_cast<char>(rng_()));
    return s;
  }

  double number() {
    switch (pick(4)) {
      case 0:
        return edge_doubles()[pick(static_cast<int>(edge_doubles().size()))];
      case 1: {
        uint64_t bits = (static_cast<uint64_t>(rng_()) << 32) | rng_();
        double d;
        std::memcpy(&d, &bits, sizeof d);
        return d;
      }
      case 2:
        return static_cast<double>(static_cast<int64_t>(rng_()) - (1LL << 31));
      default:
        return std::uniform_real_distribution<double>(-1e6, 1e6)(rng_);
    }
  }

  float single() {
    switch (pick(3)) {
      case 0:
        return edge_floats()[pick(static_cast<int>(edge_floats().size()))];
      case 1: {
        uint32_t bits = rng_();
        float f;
        std::memcpy(&f, &bits, sizeof f);
        return f;
      }
      default:
        return std::uniform_real_distribution<float>(-1e4f, 1e4f)(rng_);
    }
  }

  template <class T>
  T integer() {
    switch (pick(4)) {
      case 0:
        return std::numeric_limits<T>::min();
      case 1:
        return std::numeric_limits<T>::max();
      case 2:
        return static_cast<T>(pick(3)) - (std::is_signed_v<T> ? 1 : 0);
      default:
        return static_cast<T>((static_cast<uint64_t>(rng_()) << 32) | rng_());
    }
  }

 private:
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int pick(int n) { return static_cast<int>(rng_() % static_cast<uint32_t>(n)); }

  int enum_number(const google::protobuf::FieldDescriptor& f) {
    const auto* e = f.enum_type();
    if (e->full_name() == "google.protobuf.NullValue") return 0;
    if (chance(0.03)) return 42;  // unknown to the descriptor: protobuf writes the number
    return e->value(pick(e->value_count()))->number();
  }

  void map_entry(jt::AllKinds& m, const google::protobuf::FieldDescriptor& f, int depth) {
    auto* r = m.GetReflection();
    Message* entry = r->AddMessage(&m, &f);
    auto* er = entry->GetReflection();
    element(*entry, *er, *f.message_type()->map_key(), false, depth);
    element(*entry, *er, *f.message_type()->map_value(), false, depth);
  }

  void element(Message& m, const google::protobuf::Reflection& r, const google::protobuf::FieldDescriptor& f, bool add,
               int depth) {
    using FD = google::protobuf::FieldDescriptor;
    switch (f.cpp_type()) {
      case FD::CPPTYPE_INT32:
        add ? r.AddInt32(&m, &f, integer<int32_t>()) : r.SetInt32(&m, &f, integer<int32_t>());
        break;
      case FD::CPPTYPE_INT64:
        add ? r.AddInt64(&m, &f, integer<int64_t>()) : r.SetInt64(&m, &f, integer<int64_t>());
        break;
      case FD::CPPTYPE_UINT32:
        add ? r.AddUInt32(&m, &f, integer<uint32_t>()) : r.SetUInt32(&m, &f, integer<uint32_t>());
        break;
      case FD::CPPTYPE_UINT64:
        add ? r.AddUInt64(&m, &f, integer<uint64_t>()) : r.SetUInt64(&m, &f, integer<uint64_t>());
        break;
      case FD::CPPTYPE_DOUBLE:
        add ? r.AddDouble(&m, &f, number()) : r.SetDouble(&m, &f, number());
        break;
      case FD::CPPTYPE_FLOAT:
        add ? r.AddFloat(&m, &f, single()) : r.SetFloat(&m, &f, single());
        break;
      case FD::CPPTYPE_BOOL:
        add ? r.AddBool(&m, &f, chance(0.5)) : r.SetBool(&m, &f, chance(0.5));
        break;
      case FD::CPPTYPE_ENUM:
        add ? r.AddEnumValue(&m, &f, enum_number(f)) : r.SetEnumValue(&m, &f, enum_number(f));
        break;
      case FD::CPPTYPE_STRING: {
        std::string s = f.type() == FD::TYPE_BYTES ? bytes() : text();
        add ? r.AddString(&m, &f, s) : r.SetString(&m, &f, s);
        break;
      }
      case FD::CPPTYPE_MESSAGE: {
        Message* sub = add ? r.AddMessage(&m, &f) : r.MutableMessage(&m, &f);
        message(*sub, depth + 1);
        break;
      }
    }
  }

  void message(Message& sub, int depth) {
    const std::string& type = sub.GetDescriptor()->full_name();
    if (type == "google.protobuf.Value") {
      sub.CopyFrom(value(depth));
    } else if (type == "google.protobuf.Struct") {
      auto* fields = static_cast<google::protobuf::Struct&>(sub).mutable_fields();
      int n = pick(3);
      for (int i = 0; i < n; i++) (*fields)[text()] = value(depth + 1);
    } else if (type == "google.protobuf.ListValue") {
      auto& list = static_cast<google::protobuf::ListValue&>(sub);
      int n = pick(3);
      for (int i = 0; i < n; i++) *list.add_values() = value(depth + 1);
    } else if (type == "openshell.compute.json_test.Inner") {
      auto& in = static_cast<jt::Inner&>(sub);
      if (chance(0.5)) in.set_s(text());
      if (chance(0.5)) in.set_i(integer<int32_t>());
      if (depth < 3 && chance(0.3)) message(*in.add_more(), depth + 1);
      if (depth < 3 && chance(0.3)) message((*in.mutable_by_name())[text()], depth + 1);
    }
  }

  std::mt19937 rng_;
};

// A random JSON value from the forms protobuf may or may not take somewhere.
json random_json(std::mt19937& rng) {
  static const std::vector<json> pool = {
      nullptr,
      true,
      false,
      0,
      -1,
      1,
      2147483647,
      2147483648LL,
      -2147483649LL,
      4294967295LL,
      4294967296LL,
      9007199254740993LL,
      std::numeric_limits<int64_t>::max(),
      std::numeric_limits<int64_t>::min(),
      std::numeric_limits<uint64_t>::max(),
      1.0,
      1.5,
      -0.0,
      1e300,
      3.5e38,
      1e-50,
      "",
      "x",
      "1",
      "-1",
      "01",
      " 1",
      "1.5",
      "1e3",
      "0x10",
      "NaN",
      "Infinity",
      "-Infinity",
      "true",
      "RED",
      "red",
      "GREEN",
      "ALSO_FIRST",
      "NULL_VALUE",
      "QQ==",
      "QQ",
      "QR==",
      "-_8=",
      "+/8=",
      json::array(),
      json::array({1, "a", nullptr}),
      json::object(),
      json::object({{"s", "x"}}),
      json::object({{"i", "5"}}),
      json::object({{"nope", 1}}),
      json::object({{"moreItems", json::array()}}),
  };
  return pool[rng() % pool.size()];
}

// Replaces one node of `doc` (an object) with a random value, or drops in a
// random key (some field names, some lowerCamel, some unknown).
void mutate(json& doc, std::mt19937& rng) {
  static const std::vector<std::string> keys = {"d",       "f",
                                                "i32",     "i64",
                                                "u32",     "u64",
                                                "b",       "s",
                                                "by",      "color",
                                                "r_s",     "m_s_s",
                                                "c_s",     "c_i64",
                                                "st",      "v",
                                                "lv",      "r_v",
                                                "nv",      "c_nv",
                                                "o_i32",   "oI32",
                                                "rI32",    "renamed",
                                                "custom",  "unknown_field",
                                                "inner",   "m_i32_i64",
                                                "m_b_by",  "m_s_v",
                                                "r_inner", "c_inner",
                                                "c_value"};
  json* node = &doc;
  // Walk down a few levels at random.
  for (int step = 0; step < 4; step++) {
    if (node->is_object() && !node->empty() && rng() % 2) {
      auto it = node->begin();
      std::advance(it, rng() % node->size());
      node = &*it;
    } else if (node->is_array() && !node->empty() && rng() % 2) {
      node = &(*node)[rng() % node->size()];
    } else {
      break;
    }
  }
  if (node->is_object() && rng() % 2) {
    (*node)[keys[rng() % keys.size()]] = random_json(rng);
  } else {
    *node = random_json(rng);
  }
}

}  // namespace

// ------------------------------------------------------------ message -> JSON

TEST_CASE("sandbox json: a DriverSandbox with every field set is written as protobuf writes it", "[sandbox_json]") {
  QuietProtobuf quiet;
  auto sb = full_sandbox();
  CHECK(same_json(sb));
  CHECK(round_trips(sb));
  CHECK(same_json(v1::DriverSandbox()));
  CHECK(message_to_json(v1::DriverSandbox()).value() == json::object());
  // the view tests hold builtins' patches against is the same document
  CHECK(message_to_json(sb).value() == protobuf_json::message_to_json(sb).value());
  // optional presence: a zero count is written, an unset one is not
  CHECK(message_to_json(sb).value()["spec"]["resource_requirements"]["gpu"] == json{{"count", 0}});
  sb.mutable_spec()->mutable_resource_requirements()->mutable_gpu()->clear_count();
  CHECK(same_json(sb));
  CHECK(message_to_json(sb).value()["spec"]["resource_requirements"]["gpu"] == json::object());
}

TEST_CASE("sandbox json: every field kind, set once each", "[sandbox_json]") {
  QuietProtobuf quiet;
  jt::AllKinds m;
  m.set_d(0.1);
  m.set_f(0.1f);
  m.set_i32(-5);
  m.set_i64(-9000000000LL);
  m.set_u32(4000000000u);
  m.set_u64(18446744073709551615ULL);
  m.set_s32(-7);
  m.set_s64(std::numeric_limits<int64_t>::min());
  m.set_fx32(7);
  m.set_fx64(8);
  m.set_sfx32(-9);
  m.set_sfx64(-10);
  m.set_b(true);
  m.set_s("text");
  m.set_by(std::string("\0\x01\xFF\xFE bytes", 9));
  m.set_color(jt::DEEP_BLUE);
  m.mutable_inner()->set_s("in");
  m.mutable_inner()->add_more()->set_i(3);
  m.set_o_d(0);
  m.set_o_f(0);
  m.set_o_i32(0);
  m.set_o_i64(0);
  m.set_o_u32(0);
  m.set_o_u64(0);
  m.set_o_b(false);
  m.set_o_s("");
  m.set_o_by("");
  m.set_o_color(jt::COLOR_UNSPECIFIED);
  m.mutable_o_inner();
  m.add_r_d(1.5);
  m.add_r_d(-0.0);
  m.add_r_f(2.5f);
  m.add_r_i32(-1);
  m.add_r_i32(0);
  m.add_r_i64(1);
  m.add_r_u32(2);
  m.add_r_u64(3);
  m.add_r_s64(-4);
  m.add_r_fx32(5);
  m.add_r_b(false);
  m.add_r_s("");
  m.add_r_by("\xFF");
  m.add_r_color(jt::MINUS);
  m.add_r_inner();
  m.add_r_nv(google::protobuf::NULL_VALUE);
  (*m.mutable_m_s_s())["k"] = "";
  (*m.mutable_m_i32_i64())[-3] = 0;
  (*m.mutable_m_i64_s())[std::numeric_limits<int64_t>::min()] = "min";
  (*m.mutable_m_u32_d())[4294967295u] = 0.0;
  (*m.mutable_m_u64_f())[0] = 1.25f;
  (*m.mutable_m_b_by())[true] = "";
  (*m.mutable_m_b_by())[false] = "x";
  (*m.mutable_m_s32_color())[-1] = jt::COLOR_UNSPECIFIED;
  (*m.mutable_m_fx64_inner())[1];
  (*m.mutable_m_sfx32_b())[-2] = false;
  (*m.mutable_m_s_v())["v"].set_bool_value(false);
  (*m.mutable_m_s_i32())["zero"] = 0;
  m.set_c_i64(0);
  (*m.mutable_st()->mutable_fields())["n"].set_number_value(std::numeric_limits<double>::quiet_NaN());
  (*m.mutable_st()->mutable_fields())["inf"].set_number_value(-std::numeric_limits<double>::infinity());
  m.mutable_v()->mutable_list_value()->add_values()->set_null_value(google::protobuf::NULL_VALUE);
  m.mutable_lv()->add_values()->set_string_value("x");
  m.add_r_v()->set_number_value(-0.0);
  m.add_r_st();
  m.set_custom(12);
  CHECK(same_json(m));

  // Each oneof member alone, default values included (a set member is written).
  for (int i = 0; i < 8; i++) {
    jt::AllKinds o;
    switch (i) {
      case 0:
        o.set_c_s("");
        break;
      case 1:
        o.set_c_i64(0);
        break;
      case 2:
        o.mutable_c_inner();
        break;
      case 3:
        o.set_c_color(jt::COLOR_UNSPECIFIED);
        break;
      case 4:
        o.set_c_d(-0.0);
        break;
      case 5:
        o.mutable_c_value()->set_null_value(google::protobuf::NULL_VALUE);
        break;
      case 6:
        o.set_c_nv(google::protobuf::NULL_VALUE);
        break;
      default:
        o.set_c_b(false);
        break;
    }
    CHECK(same_json(o));
  }
}

TEST_CASE("sandbox json: edge values of every scalar kind", "[sandbox_json]") {
  QuietProtobuf quiet;
  for (double d : edge_doubles()) {
    jt::AllKinds m;
    m.set_d(d);
    m.add_r_d(d);
    (*m.mutable_m_u32_d())[1] = d;
    m.set_c_d(d);
    m.mutable_v()->set_number_value(d);
    (*m.mutable_st()->mutable_fields())["x"].set_number_value(d);
    CHECK(same_json(m));
    Value v;
    v.set_number_value(d);
    CHECK(same_value_json(v));
  }
  for (float f : edge_floats()) {
    jt::AllKinds m;
    m.set_f(f);
    m.add_r_f(f);
    (*m.mutable_m_u64_f())[1] = f;
    m.set_o_f(f);
    CHECK(same_json(m));
  }
  for (const auto& s : edge_strings()) {
    jt::AllKinds m;
    m.set_s(s);
    m.set_by(s);
    m.add_r_s(s);
    (*m.mutable_m_s_s())[s] = s;
    m.mutable_v()->set_string_value(s);
    (*m.mutable_st()->mutable_fields())[s].set_string_value(s);
    bool walked = same_json(m);
    CHECK(walked == proto_json::is_utf8(s));  // not UTF-8: protobuf's util writes it
    Value v;
    v.set_string_value(s);
    CHECK(same_value_json(v) == proto_json::is_utf8(s));
  }
  jt::AllKinds ints;
  ints.set_i32(std::numeric_limits<int32_t>::min());
  ints.set_u32(std::numeric_limits<uint32_t>::max());
  ints.set_i64(std::numeric_limits<int64_t>::max());
  ints.set_u64(std::numeric_limits<uint64_t>::max());
  ints.set_s32(std::numeric_limits<int32_t>::max());
  ints.set_sfx64(std::numeric_limits<int64_t>::min());
  CHECK(same_json(ints));
}

TEST_CASE("sandbox json: what the walk leaves to protobuf is still written as protobuf writes it", "[sandbox_json]") {
  QuietProtobuf quiet;
  // An enum number the descriptor does not know, an aliased enum.
  jt::AllKinds unknown_enum;
  unknown_enum.set_color(static_cast<jt::Color>(42));
  CHECK_FALSE(same_json(unknown_enum));
  jt::AllKinds alias;
  alias.set_aliased(jt::FIRST);
  CHECK_FALSE(same_json(alias));
  // A Value with no kind: alone, in a Struct, in a list, in a map.
  Value none;
  CHECK_FALSE(same_value_json(none));
  CHECK(value_to_json(none).is_discarded());
  jt::AllKinds kindless;
  (*kindless.mutable_st()->mutable_fields())["a"];
  CHECK_FALSE(same_json(kindless));
  kindless.Clear();
  kindless.mutable_lv()->add_values();
  CHECK_FALSE(same_json(kindless));
  kindless.Clear();
  (*kindless.mutable_m_s_v())["a"];
  CHECK_FALSE(same_json(kindless));
  kindless.Clear();
  kindless.mutable_v();
  CHECK_FALSE(same_json(kindless));

  // Well-known types other than Struct, Value and ListValue.
  jt::WellKnown w;
  w.set_plain("p");
  CHECK(same_json(w));
  w.mutable_ts()->set_seconds(1700000000);
  w.mutable_ts()->set_nanos(5000);
  CHECK_FALSE(same_json(w));
  w.mutable_dur()->set_seconds(-3);
  w.mutable_fm()->add_paths("spec.template_image");
  w.mutable_w_i32()->set_value(0);
  w.mutable_w_s()->set_value("s");
  w.mutable_w_i64()->set_value(-1);
  w.mutable_w_b();
  w.mutable_e();
  w.add_r_ts()->set_seconds(1);
  (*w.mutable_m_dur())["d"].set_nanos(1);
  jt::AllKinds packed;
  packed.set_s("in any");
  w.mutable_any()->PackFrom(packed);
  CHECK_FALSE(same_json(w));
  w.mutable_ts()->set_seconds(-99999999999999LL);  // out of range: protobuf's error, both ways
  CHECK_FALSE(same_json(w));
  CHECK_FALSE(message_to_json(w).ok());
}

TEST_CASE("sandbox json: fields this build does not know are left out, as protobuf does", "[sandbox_json]") {
  QuietProtobuf quiet;
  openshell::compute::future::FutureSandbox future;
  future.set_id("f");
  future.set_future_note("note");
  future.mutable_spec()->set_future_spec_field("x");
  future.mutable_spec()->mutable_template_()->set_future_template_field(7);
  v1::DriverSandbox sb;
  REQUIRE(sb.ParseFromString(future.SerializeAsString()));
  CHECK(same_json(sb));
}

TEST_CASE("sandbox json: deep nesting either way", "[sandbox_json]") {
  QuietProtobuf quiet;
  for (int depth : {1, 5, 10, 14, 15, 16, 17, 20, 30, 31, 32, 33, 40, 50, 60, 63, 64, 65, 70, 99, 100, 101, 150}) {
    INFO("depth " << depth);
    jt::Inner inner;
    jt::Inner* at = &inner;
    for (int i = 0; i < depth; i++) at = at->add_more();
    at->set_s("bottom");
    bool walked = same_json(inner);
    CHECK(walked == (depth <= 32));
    auto doc = protobuf_json::message_to_json(inner);
    if (doc) same_verdict<jt::Inner>(doc.value());

    Value v;
    Value* vat = &v;
    for (int i = 0; i < depth; i++)
      vat = (*vat->mutable_struct_value()->mutable_fields())["k"].mutable_list_value()->add_values();
    vat->set_string_value("bottom");
    same_value_json(v);
    jt::AllKinds m;
    *m.mutable_v() = v;
    same_json(m);
    json nested = "bottom";
    for (int i = 0; i < depth; i++) nested = json{{"k", json::array({nested})}};
    same_verdict<jt::AllKinds>(json{{"v", nested}});
    same_verdict<v1::DriverSandbox>(json{{"spec", {{"template", {{"driver_config", nested}}}}}});
  }
}

TEST_CASE("sandbox json: random messages, written and read back as protobuf does", "[sandbox_json]") {
  QuietProtobuf quiet;
  Gen gen(20261126);
  int walked = 0, read = 0, round_tripped = 0;
  const int kCount = 3000;
  for (int i = 0; i < kCount; i++) {
    jt::AllKinds m = gen.all_kinds();
    INFO("message " << i);
    if (same_json(m)) walked++;
    auto doc = protobuf_json::message_to_json(m);
    if (!doc || doc.value().is_discarded()) continue;
    if (same_verdict<jt::AllKinds>(doc.value())) read++;
    // Through the fast pair, as protobuf's own pair would.
    jt::AllKinds back_fast, back_ref;
    auto fast_doc = message_to_json(m);
    REQUIRE(fast_doc.ok());
    bool fast_ok = json_to_message(fast_doc.value(), back_fast).ok();
    bool ref_ok = protobuf_json::json_to_message(doc.value(), back_ref).ok();
    REQUIRE(fast_ok == ref_ok);
    REQUIRE(bytes_of(back_fast) == bytes_of(back_ref));
    if (fast_ok && round_trips(m)) round_tripped++;
  }
  // Not only fallbacks: most messages are walked both ways.
  INFO("walked " << walked << ", read " << read << ", round-tripped " << round_tripped << " of " << kCount);
  CHECK(walked > kCount / 2);
  CHECK(read > kCount / 2);
  CHECK(round_tripped > kCount / 3);
}

// ------------------------------------------------------------ JSON -> message

TEST_CASE("sandbox json: documents protobuf refuses are refused with its words", "[sandbox_json]") {
  QuietProtobuf quiet;
  const char* sandbox_docs[] = {
      R"({})",
      R"({"id": "x", "spec": {"command": ["a", ""], "tty": false}})",
      R"({"id": 5})",
      R"({"id": null})",
      R"({"id": true})",
      R"({"spec": {"tty": "true"}})",
      R"({"spec": {"tty": 1}})",
      R"({"spec": {"tty": null}})",
      R"({"spec": {"command": "ls"}})",
      R"({"spec": {"command": [1]}})",
      R"({"spec": {"command": [null]}})",
      R"({"spec": {"command": null}})",
      R"({"spec": {"environment": {"A": 1}}})",
      R"({"spec": {"environment": []}})",
      R"({"spec": {"environment": {"A": null}}})",
      R"({"spec": {"environment": null}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": -1}}}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": 4294967296}}}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": 1.5}}}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": 2.0}}}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": "3"}}}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": null}}}})",
      R"({"spec": {"resource_requirements": {"gpu": {"count": 0}}}})",
      R"({"spec": {"resource_requirements": {"gpu": null}}})",
      R"({"spec": {"resource_requirements": {"gpu": []}}})",
      R"({"spec": {"sandboxToken": "x"}})",
      R"({"spec": {"template": {"driverConfig": {}}}})",
      R"({"spec": {"template": {"driver_config": []}}})",
      R"({"spec": {"template": {"driver_config": 5}}})",
      R"({"spec": {"template": {"driver_config": null}}})",
      R"({"spec": {"template": {"driver_config": {"a": null}}}})",
      R"({"spec": {"template": {"driver_config": {"a": [1, null, {"b": 1e308}, -0.0, 18446744073709551615]}}}})",
      R"({"spec": {"template": {"driver_config": {"a": 9007199254740993}}}})",
      R"({"spec": {"template": {"driver_config": {"a": -9223372036854775808}}}})",
      R"({"spec": {"template": {"driver_config": {"fooBar": {"x_y": 1}}}}})",
      R"({"spec": {"template": {"labels": {"a": "b", "c": ["d"]}}}})",
      R"({"status": {"conditions": {}}})",
      R"({"status": {"conditions": [{"type": 1}]}})",
      R"({"status": {"conditions": [null]}})",
      R"({"status": {"conditions": [{"lastTransitionTime": "t"}]}})",
      R"({"unknown": 1})",
      R"({"spec": {"template": {"resources": {"cpu_limit": "1", "cpuRequest": "1"}}}})",
  };
  int walked = 0;
  for (const char* doc : sandbox_docs) walked += same_verdict<v1::DriverSandbox>(doc);
  CHECK(walked >= 6);

  // Not objects, and strings that are not UTF-8 (doc.dump() throws on them).
  for (const json& doc : {json::array(), json("x"), json(nullptr), json(5)}) same_verdict<v1::DriverSandbox>(doc);
  same_verdict<v1::DriverSandbox>(json{{"id", "\xFF"}});
  same_verdict<v1::DriverSandbox>(json{{"spec", {{"environment", {{"\xFF", "v"}}}}}});
  same_verdict<v1::DriverSandbox>(json{{"spec", {{"template", {{"driver_config", {{"k", "\xED\xA0\x80"}}}}}}}});
  // Numbers nlohmann holds but cannot write: dumped as null.
  same_verdict<v1::DriverSandbox>(
      json{{"spec", {{"template", {{"driver_config", {{"k", std::numeric_limits<double>::infinity()}}}}}}}});
  same_verdict<v1::DriverSandbox>(
      json{{"spec", {{"template", {{"driver_config", {{"k", std::numeric_limits<double>::quiet_NaN()}}}}}}}});
  same_verdict<v1::DriverSandbox>(json{{"id", json(json::value_t::discarded)}});
  same_verdict<v1::DriverSandbox>(json{{"id", json::binary({1, 2})}});

  const char* kinds_docs[] = {
      R"({"i32": 2147483647, "u32": 4294967295, "i64": "-9223372036854775808", "u64": "18446744073709551615"})",
      R"({"i32": 2147483648})",
      R"({"i32": -2147483649})",
      R"({"i32": "12"})",
      R"({"i32": " 12"})",
      R"({"i32": "1e3"})",
      R"({"i32": 1.0})",
      R"({"i32": 1e3})",
      R"({"i64": 9223372036854775807})",
      R"({"i64": 9223372036854775808})",
      R"({"i64": "9223372036854775808"})",
      R"({"i64": "01"})",
      R"({"i64": "-0"})",
      R"({"i64": "+1"})",
      R"({"i64": "1.0"})",
      R"({"u64": -1})",
      R"({"u64": "-1"})",
      R"({"u64": 18446744073709551615})",
      R"({"u64": 18446744073709551616})",
      R"({"u32": -1})",
      R"({"d": "NaN", "f": "-Infinity", "r_d": ["Infinity", 1, -0.0, 1e-320]})",
      R"({"d": "1.5"})",
      R"({"d": "nan"})",
      R"({"d": 9007199254740993})",
      R"({"d": 9223372036854775807})",
      R"({"d": 18446744073709551615})",
      R"({"f": 3.5e38})",
      R"({"f": 3.4028234663852886e38})",
      R"({"f": 1e-50})",
      R"({"f": 16777217})",
      R"({"f": 0.1})",
      R"({"b": "true"})",
      R"({"b": 0})",
      R"({"color": "RED"})",
      R"({"color": "red"})",
      R"({"color": "deep-blue"})",
      R"({"color": 1})",
      R"({"color": 99})",
      R"({"color": "99"})",
      R"({"color": "1"})",
      R"({"color": "NOPE"})",
      R"({"color": null})",
      R"({"aliased": "ALSO_FIRST"})",
      R"({"nv": null})",
      R"({"nv": "NULL_VALUE"})",
      R"({"nv": 0})",
      R"({"c_nv": null})",
      R"({"c_nv": "NULL_VALUE"})",
      R"({"r_nv": [null, "NULL_VALUE"]})",
      R"({"by": "QQ=="})",
      R"({"by": "QQ"})",
      R"({"by": "QR=="})",
      R"({"by": "-_8="})",
      R"({"by": "+/8="})",
      R"({"by": "Q Q=="})",
      R"({"by": 5})",
      R"({"m_i32_i64": {"1": "2", "-1": 3}})",
      R"({"m_i32_i64": {"01": 1}})",
      R"({"m_i32_i64": {" 1": 1}})",
      R"({"m_i32_i64": {"1.0": 1}})",
      R"({"m_i32_i64": {"2147483648": 1}})",
      R"({"m_i32_i64": {"x": 1}})",
      R"({"m_b_by": {"true": "QQ==", "false": ""}})",
      R"({"m_b_by": {"True": ""}})",
      R"({"m_b_by": {"1": ""}})",
      R"({"m_u64_f": {"18446744073709551615": 1.5}})",
      R"({"m_s_v": {"a": null, "b": [null], "c": {}}})",
      R"({"m_s32_color": {"-5": "GREEN", "6": "COLOR_UNSPECIFIED"}})",
      R"({"m_fx64_inner": {"1": {}, "2": {"s": "x", "more": [{}]}}})",
      R"({"m_fx64_inner": {"1": null}})",
      R"({"c_s": "a", "c_i64": "1"})",
      R"({"c_s": "a"})",
      R"({"c_s": null})",
      R"({"c_inner": {}, "c_value": 1})",
      R"({"c_value": null})",
      R"({"c_value": {"a": 1}})",
      R"({"v": null})",
      R"({"v": 1})",
      R"({"v": [null, {"x": null}]})",
      R"({"r_v": [null]})",
      R"({"r_v": [1, "a", {}, []]})",
      R"({"st": null})",
      R"({"st": []})",
      R"({"st": {"a": null}})",
      R"({"lv": null})",
      R"({"lv": {}})",
      R"({"lv": [null, 1]})",
      R"({"r_st": [{}, {"a": 1}]})",
      R"({"r_st": [null]})",
      R"({"custom": 1})",
      R"({"renamed": 1})",
      R"({"o_i32": 0, "o_s": "", "o_b": false, "o_color": "COLOR_UNSPECIFIED", "o_inner": {}, "o_by": ""})",
      R"({"o_i32": null})",
      R"({"i32": 0, "s": "", "b": false, "color": "COLOR_UNSPECIFIED", "d": 0, "d": -0.0})",
      R"({"rI32": [1]})",
      R"({"r_i32": [1, "2", 3.0]})",
      R"({"inner": {"more": [{"more": [{"byName": {}}]}]}})",
      R"({"inner": {"more": [{"more": [{"by_name": {"a": {"i": 1}}}]}]}})",
  };
  walked = 0;
  for (const char* doc : kinds_docs) walked += same_verdict<jt::AllKinds>(doc);
  CHECK(walked >= 20);

  const char* well_known_docs[] = {
      R"({"ts": "2026-11-26T00:00:00Z"})",
      R"({"ts": "yesterday"})",
      R"({"dur": "1.5s", "fm": "a.b,c", "w_i32": 5, "w_s": "x", "e": {}})",
      R"({"w_i64": "5", "w_b": null})",
      R"({"any": {"@type": "type.googleapis.com/openshell.compute.json_test.Inner", "s": "x"}})",
      R"({"any": {"@type": "type.googleapis.com/nope"}})",
      R"({"plain": "p"})",
  };
  for (const char* doc : well_known_docs) same_verdict<jt::WellKnown>(doc);
}

TEST_CASE("sandbox json: random mutations of valid documents are judged as protobuf judges them", "[sandbox_json]") {
  QuietProtobuf quiet;
  Gen gen(7);
  std::mt19937 rng(11);
  int accepted = 0, walked = 0;
  const int kCount = 3000;
  for (int i = 0; i < kCount; i++) {
    auto doc = protobuf_json::message_to_json(gen.all_kinds());
    if (!doc || !doc.value().is_object()) continue;
    json d = doc.value();
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; e++) mutate(d, rng);
    INFO("document " << i);
    if (same_verdict<jt::AllKinds>(d)) walked++;
    if (judge<jt::AllKinds>(&protobuf_json::json_to_message, d).ok) accepted++;
  }
  INFO("accepted " << accepted << ", walked " << walked << " of " << kCount);
  CHECK(walked > kCount / 20);
  CHECK(accepted > walked);  // some accepted documents went to protobuf: the walk does not read everything
}

// ------------------------------------------------------------ Value <-> JSON

TEST_CASE("sandbox json: patch values are written as protobuf writes them", "[sandbox_json]") {
  QuietProtobuf quiet;
  Gen gen(3);
  int walked = 0;
  for (int i = 0; i < 2000; i++) walked += same_value_json(gen.value(0));
  CHECK(walked > 1500);
}
