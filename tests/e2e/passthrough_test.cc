// Every RPC through one wrapper and through a chain of three returns what the
// memory driver returns directly; unknown fields and methods pass through;
// deadline, cancellation and traceparent reach the base driver; the sandbox
// token never reaches a log.
#include "call/outcome.h"
#include "delegates/delegate.h"
#include "future.pb.h"
#include "tests/support/harness.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <sstream>
#include <thread>

using namespace owrap::test;
using Catch::Contains;

namespace {

// A chain outer -> middle -> inner -> memory, each launching the next.
struct Chain {
  explicit Chain(const TempDir& dir, const std::string& record) {
    WrapperSpec inner{"inner", "memory", "nested", memory_command(record)};
    WrapperSpec middle{"middle", "inner", "nested", wrapper_command(dir, inner)};
    wrapper =
        std::make_unique<WrapperProc>(dir, WrapperSpec{"outer", "middle", "nested", wrapper_command(dir, middle)});
  }
  std::unique_ptr<WrapperProc> wrapper;
};

std::string describe(const grpc::Status& s, const google::protobuf::Message& m) {
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(m, &json);
  // Transition times have one-second resolution and differ between runs.
  nlohmann::json j = nlohmann::json::parse(json.empty() ? "{}" : json);
  std::function<void(nlohmann::json&)> scrub = [&](nlohmann::json& v) {
    if (v.is_object()) {
      v.erase("lastTransitionTime");
      for (auto& [_, x] : v.items()) scrub(x);
    } else if (v.is_array()) {
      for (auto& x : v) scrub(x);
    }
  };
  scrub(j);
  std::ostringstream out;
  out << s.error_code() << "|" << s.error_message() << "|" << s.error_details().size() << "|"
      << (s.ok() ? j.dump() : "");
  return out.str();
}

// The same conversation against any socket; `wrap` nests a base block the
// way the caller in front of that socket must.
std::vector<std::string> converse(const std::string& socket, const std::function<std::string(std::string)>& wrap) {
  auto stub = stub_for(socket);
  std::vector<std::string> out;
  auto call = [&](auto method, const auto& req, auto resp) {
    grpc::ClientContext ctx;
    grpc::Status s = ((*stub).*method)(&ctx, req, &resp);
    out.push_back(describe(s, resp));
  };
  namespace v1 = openshell::compute::v1;
  using Stub = v1::ComputeDriver::Stub;

  call(&Stub::GetGatewayListenerRequirements, v1::GetGatewayListenerRequirementsRequest{},
       v1::GetGatewayListenerRequirementsResponse{});
  call(
      &Stub::EnsureWorkspace,
      [] {
        v1::EnsureWorkspaceRequest r;
        r.set_workspace("ws1");
        return r;
      }(),
      v1::EnsureWorkspaceResponse{});
  call(
      &Stub::EnsureWorkspace,
      [] {
        v1::EnsureWorkspaceRequest r;
        r.set_workspace("../bad");
        return r;
      }(),
      v1::EnsureWorkspaceResponse{});

  auto create = [&](v1::DriverSandbox sb) {
    v1::CreateSandboxRequest r;
    *r.mutable_sandbox() = std::move(sb);
    call(&Stub::CreateSandbox, r, v1::CreateSandboxResponse{});
  };
  auto validate = [&](v1::DriverSandbox sb) {
    v1::ValidateSandboxCreateRequest r;
    *r.mutable_sandbox() = std::move(sb);
    call(&Stub::ValidateSandboxCreate, r, v1::ValidateSandboxCreateResponse{});
  };
  validate(make_sandbox("sb-1", wrap(R"({"delay_ms": {"GetSandbox": 1}})")));
  validate(make_sandbox("sb-1", wrap(R"({"nonsense": 1})")));
  auto with_ws = make_sandbox("sb-1", wrap(R"({"fail": {"DeleteSandbox": "RESOURCE_EXHAUSTED"}})"));
  with_ws.set_workspace("ws1");
  create(with_ws);
  create(make_sandbox("sb-1"));    // duplicate
  create(make_sandbox("bad/id"));  // id rule
  create(make_sandbox("sb-2", wrap(R"({"fail": {"CreateSandbox": "RESOURCE_EXHAUSTED"}})")));
  create(make_sandbox("sb-3"));
  auto nows = make_sandbox("sb-4");
  nows.set_workspace("missing");
  create(nows);

  auto by_id = [](auto r, const std::string& id) {
    r.set_sandbox_id(id);
    return r;
  };
  call(&Stub::GetSandbox, by_id(v1::GetSandboxRequest{}, "sb-1"), v1::GetSandboxResponse{});
  call(&Stub::GetSandbox, by_id(v1::GetSandboxRequest{}, "nope"), v1::GetSandboxResponse{});
  call(&Stub::StopSandbox, by_id(v1::StopSandboxRequest{}, "sb-3"), v1::StopSandboxResponse{});
  call(&Stub::StopSandbox, by_id(v1::StopSandboxRequest{}, "sb-3"), v1::StopSandboxResponse{});
  call(&Stub::GetSandbox, by_id(v1::GetSandboxRequest{}, "sb-3"), v1::GetSandboxResponse{});
  call(&Stub::StartSandbox, by_id(v1::StartSandboxRequest{}, "sb-3"), v1::StartSandboxResponse{});
  call(&Stub::StartSandbox, by_id(v1::StartSandboxRequest{}, "nope"), v1::StartSandboxResponse{});
  call(&Stub::ListSandboxes, v1::ListSandboxesRequest{}, v1::ListSandboxesResponse{});
  call(
      &Stub::DeleteWorkspace,
      [] {
        v1::DeleteWorkspaceRequest r;
        r.set_workspace("ws1");
        return r;
      }(),
      v1::DeleteWorkspaceResponse{});
  call(&Stub::DeleteSandbox, by_id(v1::DeleteSandboxRequest{}, "sb-1"), v1::DeleteSandboxResponse{});
  call(&Stub::DeleteSandbox, by_id(v1::DeleteSandboxRequest{}, "sb-3"), v1::DeleteSandboxResponse{});
  call(&Stub::DeleteSandbox, by_id(v1::DeleteSandboxRequest{}, "sb-3"), v1::DeleteSandboxResponse{});
  call(&Stub::ListSandboxes, v1::ListSandboxesRequest{}, v1::ListSandboxesResponse{});
  return out;
}

std::function<std::string(std::string)> nest(std::vector<std::string> keys) {
  return [keys](std::string base) {
    for (auto it = keys.rbegin(); it != keys.rend(); ++it) base = "{\"" + *it + "\": " + base + "}";
    return base;
  };
}

}  // namespace

TEST_CASE("every RPC returns the same through one wrapper and a chain of three", "[e2e][passthrough]") {
  TempDir dir;
  MemoryDriverProc direct(dir, "direct");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  Chain chain(dir, {});

  auto expected = converse(direct.socket, nest({}));
  REQUIRE(expected.size() == 24);
  CHECK(converse(one.socket, nest({"memory"})) == expected);
  CHECK(converse(chain.wrapper->socket, nest({"middle", "inner", "memory"})) == expected);
  // The expected list really exercised errors with details and both delete answers.
  CHECK_THAT(expected[8], Contains("injected failure: CreateSandbox RESOURCE_EXHAUSTED"));
  CHECK_THAT(expected[20], Contains("injected failure: DeleteSandbox RESOURCE_EXHAUSTED"));
  CHECK_THAT(expected[21], Contains("\"deleted\":true"));
  CHECK(expected[22] == "0||0|{}");  // false is the proto3 default

  SECTION("GetCapabilities names the wrapper and its delegate") {
    openshell::compute::v1::GetCapabilitiesResponse direct_caps, caps, chain_caps;
    grpc::ClientContext c1, c2, c3;
    REQUIRE(stub_for(direct.socket)->GetCapabilities(&c1, {}, &direct_caps).ok());
    REQUIRE(stub_for(one.socket)->GetCapabilities(&c2, {}, &caps).ok());
    REQUIRE(stub_for(chain.wrapper->socket)->GetCapabilities(&c3, {}, &chain_caps).ok());
    CHECK(caps.driver_name() == "acme");
    CHECK_THAT(caps.driver_version(), Contains("openshell-driver-wrapper") && Contains("memory 0.1.0"));
    CHECK(caps.default_image() == direct_caps.default_image());
    CHECK(caps.gateway_manages_lifecycle() == direct_caps.gateway_manages_lifecycle());
    CHECK(chain_caps.driver_name() == "outer");
    CHECK_THAT(chain_caps.driver_version(), Contains("delegate middle: middle"));
  }
}

TEST_CASE("capabilities overrides and inline mode", "[e2e][passthrough]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "inline", memory_command()};
  spec.extra_toml = "";
  spec.extra_delegate_toml = "";
  std::string socket = dir.file("run/acme.sock");
  std::string cfg = wrapper_toml(spec, socket) +
                    "[capabilities]\ndefault_image = \"acme/sandbox:2\"\ngateway_manages_lifecycle = true\n";
  write_file(dir.file("acme.toml"), cfg);
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("acme.toml")}, dir.file("acme.log"));
  REQUIRE(wait_for_socket(socket));
  auto stub = stub_for(socket);
  openshell::compute::v1::GetCapabilitiesResponse caps;
  grpc::ClientContext c;
  REQUIRE(stub->GetCapabilities(&c, {}, &caps).ok());
  CHECK(caps.default_image() == "acme/sandbox:2");
  CHECK(caps.gateway_manages_lifecycle());

  // Inline: the base block is the block; the wrapper's key is peeled off.
  openshell::compute::v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox("in-1", R"({"delay_ms": {"GetSandbox": 0}})");
  grpc::ClientContext c2;
  openshell::compute::v1::CreateSandboxResponse resp;
  REQUIRE(stub->CreateSandbox(&c2, req, &resp).ok());
  *req.mutable_sandbox() = make_sandbox("in-2", R"({"acme": {"typo": 1}})");
  grpc::ClientContext c3;
  auto s = stub->CreateSandbox(&c3, req, &resp);
  CHECK(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(s.error_message(), Catch::StartsWith("driver_config.memory.acme.typo: unknown key"));
}

TEST_CASE("unknown fields and unknown methods pass through a wrapper and a chain", "[e2e][passthrough]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  Chain chain(dir, {});
  struct Target {
    std::string socket;
    std::vector<std::string> nesting;
  };
  for (const Target& t :
       {Target{one.socket, {"memory"}}, Target{chain.wrapper->socket, {"middle", "inner", "memory"}}}) {
    auto channel = grpc::CreateChannel("unix:" + t.socket, grpc::InsecureChannelCredentials());
    grpc::GenericStub generic(channel);
    auto unary = [&](const std::string& method, const std::string& bytes, std::string* out,
                     std::multimap<std::string, std::string>* trailers = nullptr) {
      grpc::ClientContext ctx;
      ctx.AddMetadata("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
      grpc::Slice slice(bytes);
      grpc::ByteBuffer req(&slice, 1), resp;
      grpc::Status result;
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      generic.UnaryCall(&ctx, method, {}, &req, &resp, [&](grpc::Status s) {
        std::lock_guard<std::mutex> l(mu);
        result = s;
        done = true;
        cv.notify_all();
      });
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return done; });
      std::vector<grpc::Slice> slices;
      if (result.ok()) {
        REQUIRE(resp.Dump(&slices).ok());
        out->clear();
        for (auto& s : slices) out->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
      if (trailers) {
        for (const auto& [k, v] : ctx.GetServerTrailingMetadata()) {
          trailers->emplace(std::string(k.data(), k.size()), std::string(v.data(), v.size()));
        }
      }
      return result;
    };

    openshell::compute::future::FutureCreateRequest create;
    auto* sb = create.mutable_sandbox();
    sb->set_id("future-1");
    sb->set_future_note("from a newer gateway");
    sb->mutable_spec()->set_future_spec_field("spec-level");
    sb->mutable_spec()->mutable_template_()->set_image("img");
    sb->mutable_spec()->mutable_template_()->set_future_template_field(4242);
    std::string dc = nest(t.nesting)("{}");
    REQUIRE(google::protobuf::util::JsonStringToMessage(
                dc, sb->mutable_spec()->mutable_template_()->mutable_driver_config())
                .ok());
    std::string out;
    REQUIRE(unary("/openshell.compute.v1.ComputeDriver/CreateSandbox", create.SerializeAsString(), &out).ok());

    openshell::compute::v1::GetSandboxRequest get;
    get.set_sandbox_id("future-1");
    REQUIRE(unary("/openshell.compute.v1.ComputeDriver/GetSandbox", get.SerializeAsString(), &out).ok());
    openshell::compute::future::FutureGetResponse got;
    REQUIRE(got.ParseFromString(out));
    CHECK(got.sandbox().future_note() == "from a newer gateway");
    CHECK(got.sandbox().spec().future_spec_field() == "spec-level");
    CHECK(got.sandbox().spec().template_().future_template_field() == 4242);

    // A method this build does not know: forwarded byte for byte, metadata both ways.
    std::multimap<std::string, std::string> trailers;
    std::string payload("\x00\x01\x02 opaque bytes \xff", 18);
    grpc::Status echoed = unary("/openshell.compute.test.Echo/Frobnicate", payload, &out, &trailers);
    INFO(echoed.error_code() << ": " << echoed.error_message());
    REQUIRE(echoed.ok());
    CHECK(out == payload);
    CHECK(trailers.find("echo-method")->second == "/openshell.compute.test.Echo/Frobnicate");
    CHECK(trailers.find("echo-traceparent")->second == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    auto s = unary("/openshell.compute.v2.ComputeDriver/Nope", "x", &out);
    CHECK(s.error_code() == grpc::StatusCode::UNIMPLEMENTED);
    CHECK_THAT(s.error_message(), Contains("/openshell.compute.v2.ComputeDriver/Nope"));

    // Streaming through the generic relay: three messages out, three echoed back.
    grpc::ClientContext sctx;
    grpc::CompletionQueue cq;
    auto stream = generic.PrepareCall(&sctx, "/openshell.compute.test.Echo/Stream", &cq);
    void* tag;
    bool ok;
    stream->StartCall(reinterpret_cast<void*>(1));
    REQUIRE(cq.Next(&tag, &ok));
    REQUIRE(ok);
    for (int i = 0; i < 3; i++) {
      std::string msg = "message-" + std::to_string(i);
      grpc::Slice slice(msg);
      grpc::ByteBuffer bb(&slice, 1), back;
      stream->Write(bb, reinterpret_cast<void*>(2));
      REQUIRE(cq.Next(&tag, &ok));
      REQUIRE(ok);
      stream->Read(&back, reinterpret_cast<void*>(3));
      REQUIRE(cq.Next(&tag, &ok));
      REQUIRE(ok);
      std::vector<grpc::Slice> slices;
      REQUIRE(back.Dump(&slices).ok());
      std::string got_msg;
      for (auto& sl : slices) got_msg.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
      CHECK(got_msg == msg);
    }
    stream->WritesDone(reinterpret_cast<void*>(4));
    REQUIRE(cq.Next(&tag, &ok));
    grpc::Status fs;
    stream->Finish(&fs, reinterpret_cast<void*>(5));
    REQUIRE(cq.Next(&tag, &ok));
    CHECK(fs.ok());
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
}

TEST_CASE("deadline, cancellation and traceparent reach the base driver", "[e2e][passthrough]") {
  TempDir dir;
  std::string record = dir.file("memory.record.jsonl");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command(record)});
  auto stub = stub_for(one.socket);
  namespace v1 = openshell::compute::v1;
  {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("slow", R"({"memory": {"delay_ms": {"GetSandbox": 3000}}})");
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    REQUIRE(stub->CreateSandbox(&ctx, req, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(700));
    ctx.AddMetadata("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    ctx.AddMetadata("x-request-id", "req-77");
    v1::GetSandboxRequest req;
    req.set_sandbox_id("slow");
    v1::GetSandboxResponse resp;
    auto s = stub->GetSandbox(&ctx, req, &resp);
    CHECK(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  {
    grpc::ClientContext ctx;
    v1::GetSandboxRequest req;
    req.set_sandbox_id("slow");
    v1::GetSandboxResponse resp;
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      ctx.TryCancel();
    });
    auto s = stub->GetSandbox(&ctx, req, &resp);
    canceller.join();
    CHECK(s.error_code() == grpc::StatusCode::CANCELLED);
  }
  // The memory driver records a call when it finishes: both slow calls end
  // at most 3 s after they began.
  std::vector<nlohmann::json> gets;
  REQUIRE(wait_for(
      [&] {
        gets.clear();
        std::istringstream lines(read_file(record));
        for (std::string line; std::getline(lines, line);) {
          auto j = nlohmann::json::parse(line);
          if (j["rpc"] == "GetSandbox") gets.push_back(j);
        }
        return gets.size() == 2;
      },
      std::chrono::seconds(8)));
  auto& with_deadline = gets[0]["deadline_ms"].is_null() ? gets[1] : gets[0];
  auto& cancelled = gets[0]["deadline_ms"].is_null() ? gets[0] : gets[1];
  CHECK(with_deadline["deadline_ms"].get<int64_t>() > 0);
  CHECK(with_deadline["deadline_ms"].get<int64_t>() <= 700);
  CHECK(with_deadline["cancelled"] == true);
  CHECK(with_deadline["metadata"]["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  CHECK(with_deadline["metadata"]["x-request-id"] == "req-77");
  CHECK(cancelled["deadline_ms"].is_null());
  CHECK(cancelled["cancelled"] == true);
  CHECK(cancelled["status"] == "CANCELLED");
}

TEST_CASE("a sandbox_token sent in create appears in no log line", "[e2e][secrets]") {
  TempDir dir;
  std::string record = dir.file("memory.record.jsonl");
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command(record, {"--log-level", "debug"})});
  auto stub = stub_for(one.socket);
  const std::string token = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2VuLTQy.sig";
  namespace v1 = openshell::compute::v1;
  for (std::string dc :
       {R"({"memory": {}})", R"({"memory": {"fail": {"CreateSandbox": "INTERNAL"}}})", R"({"typo": {}})"}) {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("tok-" + std::to_string(dc.size()), dc);
    req.mutable_sandbox()->mutable_spec()->set_sandbox_token(token);
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    auto s = stub->CreateSandbox(&ctx, req, &resp);
    CHECK(s.error_message().find(token) == std::string::npos);
  }
  v1::GetSandboxRequest get;
  get.set_sandbox_id("tok-14");
  v1::GetSandboxResponse got;
  grpc::ClientContext gctx;
  REQUIRE(stub->GetSandbox(&gctx, get, &got).ok());
  CHECK(got.sandbox().spec().sandbox_token().empty());
  one.proc->signal(SIGTERM);
  REQUIRE(one.proc->wait() == 0);
  std::string log = one.proc->log();
  CHECK_THAT(log, Contains("CreateSandbox"));   // the calls were logged...
  CHECK(log.find(token) == std::string::npos);  // ...without the token
  CHECK(log.find("c2VjcmV0LXRva2VuLTQy") == std::string::npos);
  CHECK(read_file(record).find(token) == std::string::npos);
}

TEST_CASE("several worker threads relay concurrent calls; SIGTERM lets a call in flight finish", "[e2e][threads]") {
  namespace v1 = openshell::compute::v1;
  TempDir dir;
  std::string record = dir.file("record.jsonl");
  WrapperSpec spec{"acme", "memory", "nested", memory_command(record, {"--record-arrivals"})};
  spec.extra_toml = "worker_threads = 3\nshutdown_grace_ms = 5000\n";
  WrapperProc one(dir, spec);
  auto channel = grpc::CreateChannel("unix:" + one.socket, grpc::InsecureChannelCredentials());
  for (auto [id, dc] : {std::pair<std::string, std::string>{"threads-1", R"({"memory": {}})"},
                        {"threads-slow", R"({"memory": {"delay_ms": {"GetSandbox": 400}}})"}}) {
    auto stub = v1::ComputeDriver::NewStub(channel);
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox(id, dc);
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    REQUIRE(stub->CreateSandbox(&ctx, req, &resp).ok());
  }
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; t++) {
    clients.emplace_back([&] {
      auto stub = v1::ComputeDriver::NewStub(channel);
      for (int i = 0; i < 25; i++) {
        v1::GetSandboxRequest req;
        req.set_sandbox_id(i % 5 == 0 ? "nope" : "threads-1");
        grpc::ClientContext ctx;
        v1::GetSandboxResponse resp;
        grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
        bool right =
            i % 5 == 0 ? s.error_code() == grpc::StatusCode::NOT_FOUND : s.ok() && resp.sandbox().id() == "threads-1";
        (right ? ok : failed)++;
      }
    });
  }
  for (auto& c : clients) c.join();
  CHECK(ok == 200);
  CHECK(failed == 0);

  // A slow call in flight when SIGTERM arrives still gets its answer.
  auto stub = v1::ComputeDriver::NewStub(channel);
  v1::GetSandboxRequest slow;
  slow.set_sandbox_id("threads-slow");
  grpc::ClientContext slow_ctx;
  v1::GetSandboxResponse slow_resp;
  std::atomic<bool> answered{false};
  grpc::Status slow_status;
  std::thread caller([&] {
    slow_status = stub->GetSandbox(&slow_ctx, slow, &slow_resp);
    answered = true;
  });
  // In flight means the delegate has it. A fixed sleep was not enough on a
  // loaded box: the call could still be unsent when SIGTERM came, and a call
  // that arrives after it is rightly refused.
  REQUIRE(wait_for(
      [&] { return file_contains(record, R"({"arrived":true,"rpc":"GetSandbox","sandbox_id":"threads-slow"})"); }));
  one.proc->signal(SIGTERM);
  caller.join();
  INFO(slow_status.error_message());
  CHECK(answered);
  CHECK(slow_status.ok());
  CHECK(slow_resp.sandbox().id() == "threads-slow");
  REQUIRE(one.proc->wait() == 0);
}

namespace {
// Access-log lines ("message":"rpc") of one RPC in a wrapper log, parsed.
std::vector<nlohmann::json> access_log(const std::string& log, const std::string& rpc) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("message", "") == "rpc" && j.value("rpc", "") == rpc) out.push_back(j);
  }
  return out;
}
}  // namespace

TEST_CASE("a delegate reply that does not parse is INTERNAL naming delegate and method", "[e2e][defects]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command({}, {"--reply-garbage", "GetSandbox"})});
  auto stub = stub_for(one.socket);
  grpc::ClientContext ctx;
  v1::GetSandboxRequest req;
  req.set_sandbox_id("sb-1");
  v1::GetSandboxResponse resp;
  grpc::Status s = stub->GetSandbox(&ctx, req, &resp);
  CHECK(s.error_code() == grpc::StatusCode::INTERNAL);
  CHECK_THAT(s.error_message(), Contains("delegate \"memory\"") && Contains("GetSandbox"));
  // Other RPCs are untouched.
  grpc::ClientContext caps_ctx;
  v1::GetCapabilitiesResponse caps;
  CHECK(stub->GetCapabilities(&caps_ctx, v1::GetCapabilitiesRequest{}, &caps).ok());
  REQUIRE(wait_for([&] { return !access_log(one.proc->log(), "GetSandbox").empty(); }));
  CHECK(access_log(one.proc->log(), "GetSandbox")[0]["status"] == "INTERNAL");
}

TEST_CASE("a request the wrapper cannot parse is answered and access-logged; library logs stay JSON",
          "[e2e][defects]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  // A CreateSandboxRequest whose sandbox id is not UTF-8: proto3 refuses to
  // parse it, and libprotobuf logs about it on its own.
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox("ZZZZ");
  std::string bytes = req.SerializeAsString();
  auto at = bytes.find("ZZZZ");
  REQUIRE(at != std::string::npos);
  bytes.replace(at, 4, "\xff\xfe\xfd\xfc");
  grpc::Status status = generic_unary(one.socket, "/openshell.compute.v1.ComputeDriver/CreateSandbox", bytes);
  CHECK(status.error_code() == grpc::StatusCode::INTERNAL);
  CHECK_THAT(status.error_message(), Contains("does not parse as openshell.compute.v1.CreateSandboxRequest"));
  REQUIRE(wait_for([&] { return !access_log(one.proc->log(), "CreateSandbox").empty(); }));
  CHECK(access_log(one.proc->log(), "CreateSandbox")[0]["status"] == "INTERNAL");
  // Every line on the wrapper's stderr is JSON, libprotobuf's complaint too.
  std::istringstream log(one.proc->log());
  bool protobuf_line = false;
  for (std::string line; std::getline(log, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    INFO(line);
    CHECK_FALSE(j.is_discarded());
    if (!j.is_discarded() && j.value("library", "") == "protobuf") protobuf_line = true;
  }
  CHECK(protobuf_line);
}

TEST_CASE("gRPC's own log lines are JSON lines in the wrapper's log", "[e2e][defects]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("run/acme.sock")));
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml"), "--log-level", "debug"}, dir.file("w.log"),
                  {{"GRPC_VERBOSITY", "debug"}});
  REQUIRE(wait_for_socket(dir.file("run/acme.sock")));
  wrapper.signal(SIGTERM);
  CHECK(wrapper.wait() == 0);
  std::istringstream log(wrapper.log());
  size_t grpc_lines = 0;
  for (std::string line; std::getline(log, line);) {
    if (line.find("[memory]") != std::string::npos) continue;  // the delegate's own output
    auto j = nlohmann::json::parse(line, nullptr, false);
    INFO(line);
    CHECK_FALSE(j.is_discarded());
    if (!j.is_discarded() && j.value("library", "") == "grpc") grpc_lines++;
  }
  CHECK(grpc_lines > 0);
}

TEST_CASE("a loop of wrappers ends at the hop limit with FAILED_PRECONDITION", "[e2e][defects]") {
  TempDir dir;
  // a -> b -> a: each serves even though the other is not up yet.
  WrapperSpec a{"aaa", "bbb", "nested"};
  a.endpoint_socket = dir.file("run-bbb/bbb.sock");
  a.ready_timeout_ms = 200;
  WrapperSpec b{"bbb", "aaa", "nested"};
  b.endpoint_socket = dir.file("run-aaa/aaa.sock");
  b.ready_timeout_ms = 200;
  std::string sa = dir.file("run-aaa/aaa.sock"), sb = dir.file("run-bbb/bbb.sock");
  write_file(dir.file("a.toml"), wrapper_toml(a, sa));
  write_file(dir.file("b.toml"), wrapper_toml(b, sb));
  Process wa({wrapper_bin(), "run", "--config", dir.file("a.toml")}, dir.file("a.log"));
  Process wb({wrapper_bin(), "run", "--config", dir.file("b.toml")}, dir.file("b.log"));
  REQUIRE(wait_for([&] { return file_contains(dir.file("a.log"), "wrapper serving"); }));
  REQUIRE(wait_for([&] { return file_contains(dir.file("b.log"), "wrapper serving"); }));
  std::string out, err;
  // Until each has connected to the other, a call fails UNAVAILABLE.
  wait_for([&] {
    run_command({wrapper_bin(), "ctl", "--socket", sa, "--timeout", "10s", "caps"}, &out, &err);
    return err.find("UNAVAILABLE") == std::string::npos;
  });
  auto started = std::chrono::steady_clock::now();
  int rc = run_command({wrapper_bin(), "ctl", "--socket", sa, "--timeout", "10s", "caps"}, &out, &err);
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("FAILED_PRECONDITION") && Contains("limit 16") && Contains("loop"));
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
  // A list (the watch hub's resync call) ends the same way.
  rc = run_command({wrapper_bin(), "ctl", "--socket", sb, "--timeout", "10s", "list"}, &out, &err);
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("FAILED_PRECONDITION"));
  CHECK(wa.running());
  CHECK(wb.running());
}

TEST_CASE("an endpoint that is the wrapper's own socket is refused before start", "[e2e][defects]") {
  TempDir dir;
  WrapperSpec self{"acme", "memory", "nested"};
  self.endpoint_socket = dir.file("run/acme.sock");
  write_file(dir.file("w.toml"), wrapper_toml(self, dir.file("run/acme.sock")));
  std::string out, err;
  CHECK(run_command({wrapper_bin(), "check-config", dir.file("w.toml")}, &out, &err) == 1);
  CHECK_THAT(err, Contains("delegate.endpoint") && Contains("the wrapper's own socket"));
  write_file(dir.file("w.toml"), wrapper_toml(self, dir.file("run/other.sock")));
  // Through a path that only resolves to the same socket.
  std::filesystem::create_directories(dir.file("run"));
  ::chmod(dir.file("run").c_str(), 0700);
  Process run({wrapper_bin(), "run", "--config", dir.file("w.toml"), "--bind-socket", dir.file("run/../run/acme.sock")},
              dir.file("run.log"));
  CHECK(run.wait(std::chrono::seconds(5)) == 2);
  CHECK_THAT(run.log(), Contains("--bind-socket") && Contains("the wrapper's own socket"));
}

TEST_CASE("a delegate that echoes the token: not in the message, the error details or the metadata", "[e2e][secrets]") {
  TempDir dir;
  WrapperProc w(dir, WrapperSpec{"acme", "memory", "nested", memory_command({}, {"--echo-token"})});
  const std::string token = "tok-SECRET-4711";
  auto stub = stub_for(w.socket);
  grpc::ClientContext ctx;
  v1::ValidateSandboxCreateRequest req;
  *req.mutable_sandbox() = make_sandbox("echo");
  req.mutable_sandbox()->mutable_spec()->set_sandbox_token(token);
  v1::ValidateSandboxCreateResponse resp;
  grpc::Status s = stub->ValidateSandboxCreate(&ctx, req, &resp);
  CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(s.error_message(), Contains("[REDACTED]") && !Contains(token));
  CHECK_FALSE(s.error_details().empty());  // still a google.rpc.Status, saying what the status says
  CHECK(s.error_details().find(token) == std::string::npos);
  CHECK(s.error_details().find("[REDACTED]") != std::string::npos);
  for (const auto* md : {&ctx.GetServerInitialMetadata(), &ctx.GetServerTrailingMetadata()}) {
    for (const auto& [k, v] : *md) {
      INFO(std::string(k.data(), k.size()));
      CHECK(std::string(v.data(), v.size()).find(token) == std::string::npos);
    }
  }
  auto initial = ctx.GetServerInitialMetadata().find("x-echo-token");
  REQUIRE(initial != ctx.GetServerInitialMetadata().end());
  CHECK(std::string(initial->second.data(), initial->second.size()) == "[REDACTED]");
  CHECK(ctx.GetServerTrailingMetadata().count("x-echo-token-bin") == 0);
  CHECK_THAT(w.proc->log(), !Contains(token));
}

TEST_CASE("UNAVAILABLE is 'never reached' only when no connection was made, not when the delegate died mid-call",
          "[e2e][outcome]") {
  TempDir dir;
  {
    auto nobody = stub_for(dir.file("nobody.sock"));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::GetCapabilitiesResponse caps;
    grpc::Status s = nobody->GetCapabilities(&ctx, {}, &caps);
    INFO(s.error_message());
    CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK(owrap::never_connected(s));
  }
  MemoryDriverProc driver(dir, "memory", {"--delay", "CreateSandbox=3000"});
  auto stub = stub_for(driver.socket);
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    driver.proc->signal(SIGKILL);
  });
  grpc::ClientContext ctx;
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = make_sandbox("mid-call");
  v1::CreateSandboxResponse resp;
  grpc::Status s = stub->CreateSandbox(&ctx, req, &resp);
  killer.join();
  INFO(s.error_message());
  CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK_FALSE(owrap::never_connected(s));  // the request left: in doubt
  CHECK(owrap::classify_delegate_answer(s, !owrap::never_connected(s)) == owrap::DelegateOutcome::kInDoubt);
}

TEST_CASE("an unknown method under the contract's own service is UNIMPLEMENTED, through the wrapper too",
          "[e2e][passthrough]") {
  TempDir dir;
  WrapperProc w(dir, WrapperSpec{"acme", "memory", "nested", memory_command({}, {"--reply-garbage", "GetSandbox"})});
  grpc::Status status =
      generic_unary(w.socket, "/openshell.compute.v1.ComputeDriver/Nope", std::string("\x0a\x02hi", 4));
  CHECK(status.error_code() == grpc::StatusCode::UNIMPLEMENTED);
}

// gRPC cancels every delegate call still linked to its server call when the
// server call completes, even one long answered (the cancel reaches the
// transport: about 15% of a relayed call's instructions). The wrapper lets
// go of a delegate call once its status is in; gRPC's channel trace logs
// every cancel that goes down a call's filter stack.
TEST_CASE("a relayed call that completes sends no cancel down the delegate call", "[e2e][passthrough][cost]") {
  TempDir dir;
  MemoryDriverProc memory(dir, "memory");
  WrapperSpec spec{"acme", "memory", "nested", {}};
  spec.endpoint_socket = memory.socket;
  write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("run/acme.sock")));
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml"), "--log-level", "debug"}, dir.file("w.log"),
                  {{"GRPC_VERBOSITY", "debug"}, {"GRPC_TRACE", "channel"}});
  REQUIRE(wait_for_socket(dir.file("run/acme.sock")));
  auto stub = stub_for(dir.file("run/acme.sock"));
  {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("sb");
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    REQUIRE(stub->CreateSandbox(&ctx, req, &resp).ok());
  }
  auto get = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetSandboxRequest req;
    req.set_sandbox_id("sb");
    v1::GetSandboxResponse resp;
    return stub->GetSandbox(&ctx, req, &resp);
  };
  // Cancels and access-log lines so far. One worker thread serves the calls
  // in turn, and a call's cancel would be logged before the next call's
  // access-log line.
  auto count = [&](size_t* cancels) {
    *cancels = 0;
    size_t gets = 0;
    std::istringstream log(read_file(dir.file("w.log")));
    for (std::string line; std::getline(log, line);) {
      if (line.find("CANCEL:") != std::string::npos) ++*cancels;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("message", "") == "rpc" && j.value("rpc", "") == "GetSandbox") gets++;
    }
    return gets;
  };
  size_t before = 0, after = 0;
  REQUIRE(get().ok());
  REQUIRE(wait_for([&] { return count(&before) == 1; }));
  for (int i = 0; i < 5; i++) REQUIRE(get().ok());
  for (int i = 0; i < 3; i++) {
    CHECK(generic_unary(dir.file("run/acme.sock"), "/other.Service/Method", "").error_code() ==
          grpc::StatusCode::UNIMPLEMENTED);
  }
  REQUIRE(get().ok());
  REQUIRE(wait_for([&] { return count(&after) == 7; }));
  INFO("cancels logged after the first call: " << before << ", after nine more: " << after);
  CHECK(after == before);
}

TEST_CASE("streams whose delegate ends while the caller still writes, or that the caller cancels at once",
          "[e2e][passthrough][review]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  auto channel = grpc::CreateChannel("unix:" + one.socket, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  int unimplemented = 0;
  for (int i = 0; i < 150; i++) {
    grpc::ClientContext ctx;
    grpc::CompletionQueue cq;
    // The memory driver finishes an unknown method before reading anything:
    // the relay's Write to it may still be in flight when its status comes in.
    const bool echo = i % 3 == 2;
    auto stream =
        generic.PrepareCall(&ctx, echo ? "/openshell.compute.test.Echo/S" : "/openshell.compute.test.Nope/S", &cq);
    stream->StartCall(reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    REQUIRE(cq.Next(&tag, &ok));
    std::string msg(1000 + i * 97, 'm');
    grpc::Slice slice(msg);
    grpc::ByteBuffer bb(&slice, 1);
    int pending = 0;
    for (int n = 0; n < 4 && ok; n++) {
      stream->Write(bb, reinterpret_cast<void*>(2));
      REQUIRE(cq.Next(&tag, &ok));
      if (echo && i % 2 == 0 && n == 1) {
        grpc::ByteBuffer back;
        stream->Read(&back, reinterpret_cast<void*>(3));
        pending++;
        ctx.TryCancel();  // the caller goes as the delegate answers
        break;
      }
    }
    if (echo && pending == 0) {  // the echo ends once the caller is done sending
      stream->WritesDone(reinterpret_cast<void*>(4));
      REQUIRE(cq.Next(&tag, &ok));
      for (ok = true; ok;) {  // the status comes after every message is read
        grpc::ByteBuffer back;
        stream->Read(&back, reinterpret_cast<void*>(3));
        REQUIRE(cq.Next(&tag, &ok));
      }
    }
    grpc::Status fs;
    stream->Finish(&fs, reinterpret_cast<void*>(5));
    for (int k = 0; k < 1 + pending; k++) REQUIRE(cq.Next(&tag, &ok));
    if (fs.error_code() == grpc::StatusCode::UNIMPLEMENTED) unimplemented++;
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    REQUIRE(one.proc->running());
  }
  CHECK(unimplemented >= 90);
  // Still serving.
  CHECK(generic_unary(one.socket, "/openshell.compute.test.Echo/Frobnicate", "x").ok());
  REQUIRE(one.proc->running());
}
