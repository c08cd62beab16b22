// bench/hooks: what the hook chain costs, in one run against memory
// drivers. Prints figures; asserts nothing (timing is not a test).
//   1. Sequential CreateSandbox latency, interleaved: direct to the memory
//      driver; one wrapper with 0 hooks; 3 builtin hooks (defaults, policy,
//      quota) and each alone; 1 exec hook (a shell script); 1 grpc hook
//      served inside this process (C++) and the Python example; plus one
//      Invoke round trip straight to each hook server, the yardstick of a
//      grpc hook.
//   2. 200 concurrent creates, each behind a 200 ms exec hook: wall time,
//      and GetSandbox latency of unrelated calls meanwhile against idle.
// docs/performance.md ("Hook chain") says how to run it and what it found.
#include "bench/hook_configs.h"
#include "bench/proc_stats.h"
#include "hooks.grpc.pb.h"
#include "plan/write_back.h"
#include "tests/support/harness.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/server_builder.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

using namespace owrap::test;
using owrap::bench::bench_sandbox;
using owrap::bench::bench_sandbox_as_defaults_leave_it;
using owrap::bench::cpu_us;
using owrap::bench::kDefaultsHook;
using owrap::bench::kPolicyHook;
using owrap::bench::kQuotaHook;
using owrap::bench::quantile;
namespace v1 = openshell::compute::v1;
namespace hookpb = openshell::driver_wrapper::hooks::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// Sandboxes every memory driver holds besides the ones the bench creates:
// quota lists them to seed its count (and on every create while the
// wrapper's watch is not live).
constexpr int kSeededSandboxes = 100;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// `call` timed `calls` times after `warmup` untimed runs, in microseconds,
// sorted.
template <class Call>
std::vector<double> timed_calls(int calls, int warmup, Call call) {
  std::vector<double> us;
  for (int i = 0; i < calls + warmup; i++) {
    auto t0 = Clock::now();
    call();
    if (i >= warmup) us.push_back(us_since(t0));
  }
  std::sort(us.begin(), us.end());
  return us;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void create_or_throw(v1::ComputeDriver::Stub& stub, const v1::DriverSandbox& sandbox, const std::string& what) {
  v1::CreateSandboxRequest req;
  *req.mutable_sandbox() = sandbox;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  v1::CreateSandboxResponse resp;
  auto st = stub.CreateSandbox(&ctx, req, &resp);
  // Thrown, not aborted: main's handler lets destructors stop the processes.
  if (!st.ok()) throw std::runtime_error(what + ": CreateSandbox " + sandbox.id() + ": " + st.error_message());
}

// The spec the driver stored for `id` (its environment, labels, base block),
// serialized deterministically; empty if it has none.
std::string stored_spec(v1::ComputeDriver::Stub& stub, const std::string& id) {
  v1::GetSandboxRequest req;
  req.set_sandbox_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  v1::GetSandboxResponse resp;
  if (!stub.GetSandbox(&ctx, req, &resp).ok()) return "";
  return owrap::canonical_bytes(resp.sandbox().spec());
}

void delete_sandbox(v1::ComputeDriver::Stub& stub, const std::string& id) {
  v1::DeleteSandboxRequest req;
  req.set_sandbox_id(id);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 20s);
  v1::DeleteSandboxResponse resp;
  (void)stub.DeleteSandbox(&ctx, req, &resp);
}

std::string exec_hook(const std::string& name, const std::string& script, const std::string& extra = "") {
  return "\n[[hooks]]\nname = \"" + name + "\"\ntype = \"exec\"\ncommand = [\"" + script +
         "\"]\nphases = [\"validate\"]\n" + extra;
}

std::string grpc_hook(const std::string& name, const std::string& socket) {
  return "\n[[hooks]]\nname = \"" + name + "\"\ntype = \"grpc\"\nsocket = \"" + socket +
         "\"\nphases = [\"validate\"]\n";
}

// ---- A grpc hook inside the bench: C++, so the hook's own speed does not
// dominate what the transport costs ----

class AllowHookService final : public hookpb::LifecycleHook::CallbackService {
 public:
  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* ctx, const hookpb::DescribeRequest* req,
                                     hookpb::HookManifest* manifest) override {
    manifest->set_name("bench-allow");
    manifest->add_phases("validate");
    manifest->set_failure_policy("fail_closed");
    manifest->set_request_config_key(req->hook());
    manifest->set_protocol_version(1);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* Invoke(grpc::CallbackServerContext* ctx, const hookpb::HookRequest*,
                                   hookpb::HookResponse* resp) override {
    resp->set_allowed(true);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

struct HookServer {
  explicit HookServer(const std::string& socket_path) : socket(socket_path) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    // The wrapper's hook channel pings every 30 s, also between calls.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    if (!server) throw std::runtime_error("cannot serve the C++ hook on " + socket);
  }
  ~HookServer() {
    server->Shutdown(std::chrono::system_clock::now() + 1s);
    server->Wait();
  }
  std::string socket;
  AllowHookService service;
  std::unique_ptr<grpc::Server> server;
};

// The Python example (tests/e2e/hooks_test.cc starts it the same way), or
// null after saying why not.
std::unique_ptr<Process> start_python_hook(const TempDir& dir, const std::string& socket) {
  std::string out, err;
  if (!python_grpc_available()) {
    std::printf("  (f) skipped: python3-grpcio is not importable by %s\n", system_python3().c_str());
    return nullptr;
  }
  std::string example = std::string(OWRAP_SOURCE_DIR) + "/examples/hooks/grpc";
  if (run_command({example + "/generate.sh", dir.file("pb2")}, &out, &err) != 0) {
    throw std::runtime_error("examples/hooks/grpc/generate.sh failed: " + err);
  }
  auto proc = std::make_unique<Process>(std::vector<std::string>{system_python3(), example + "/quota_label_hook.py",
                                                                 "--socket", socket, "--pb2-dir", dir.file("pb2")},
                                        dir.file("python-hook.log"));
  if (!wait_for([&] { return std::filesystem::exists(socket); }, 20s)) {
    throw std::runtime_error("the Python hook did not come up: " + proc->log());
  }
  return proc;
}

// OWRAP_BENCH_RELAY=grpc|frames: the wrappers' `relay`.
std::string relay_toml() {
  const char* relay = std::getenv("OWRAP_BENCH_RELAY");
  return relay ? "relay = \"" + std::string(relay) + "\"\n" : "";
}

// ---- 1. Sequential CreateSandbox ----

// One configuration: its own memory driver (so watch events of one do not
// wake the others), a wrapper in front of it unless direct.
struct Target {
  std::string tag;  // short, for sandbox ids and process names
  std::string label;
  int hooks = 0;
  std::unique_ptr<MemoryDriverProc> memory;
  std::unique_ptr<WrapperProc> wrapper;
  std::unique_ptr<v1::ComputeDriver::Stub> stub;    // where creates go
  std::unique_ptr<v1::ComputeDriver::Stub> driver;  // deletes, straight to the driver
  // What the client sends for a create with this id.
  std::function<v1::DriverSandbox(const std::string&)> sandbox = [](const std::string& id) {
    return bench_sandbox(id);
  };
  std::vector<double> us;
  double wrapper_cpu = 0;  // microseconds over the measured calls
  long next_id = 0;

  double p(double q) const { return quantile(us, q); }
  pid_t wrapper_pid() const { return wrapper ? wrapper->proc->pid() : -1; }
};

std::unique_ptr<Target> make_target(const TempDir& dir, std::string tag, std::string label, int hooks,
                                    const std::string& hooks_toml, bool direct = false,
                                    const std::string& binary = {}) {
  auto t = std::make_unique<Target>();
  t->tag = std::move(tag);
  t->label = std::move(label);
  t->hooks = hooks;
  t->memory = std::make_unique<MemoryDriverProc>(
      dir, "mem-" + t->tag, std::vector<std::string>{"--log-level", "warn", "--schema", "kubernetes"});
  t->driver = stub_for(t->memory->socket);
  const char* teams[] = {"blue", "red", "green", "amber", "violet"};
  for (int i = 0; i < kSeededSandboxes; i++) {
    create_or_throw(*t->driver, bench_sandbox("seed-" + std::to_string(i), teams[i % 5]), t->label + " (seeding)");
  }
  if (direct) {
    t->stub = stub_for(t->memory->socket);
    return t;
  }
  WrapperSpec spec{"w-" + t->tag, "memory", "nested", {}};
  spec.endpoint_socket = t->memory->socket;
  spec.extra_toml = "log_level = \"warn\"\n" + relay_toml();
  spec.extra_delegate_toml = hooks_toml;
  spec.binary = binary;
  t->wrapper = std::make_unique<WrapperProc>(dir, spec);
  t->stub = stub_for(t->wrapper->socket);
  return t;
}

// The first create through a grpc hook waits for its Describe.
void warm_up(Target& t, int calls) {
  std::string last_error;
  bool up = wait_for(
      [&] {
        try {
          std::string id = "warm-" + t.tag + "-" + std::to_string(t.next_id++);
          create_or_throw(*t.stub, t.sandbox(id), t.label);
          delete_sandbox(*t.driver, id);
          return true;
        } catch (const std::exception& e) {
          last_error = e.what();
          return false;
        }
      },
      20s);
  if (!up) throw std::runtime_error("no create succeeded within 20 s; the last: " + last_error);
  for (int i = 0; i < calls; i++) {
    std::string id = "warm-" + t.tag + "-" + std::to_string(t.next_id++);
    create_or_throw(*t.stub, t.sandbox(id), t.label);
    delete_sandbox(*t.driver, id);
  }
}

// Interleaved rounds, as bench/passthrough: drift of the shared machine hits
// every target alike. Each created sandbox is deleted straight at the driver
// (untimed), so every create sees the same driver state.
void sequential_creates(std::vector<Target*>& targets, int rounds, int per_round) {
  for (auto* t : targets) warm_up(*t, 200);
  for (int r = 0; r < rounds; r++) {
    for (auto* t : targets) {
      double cpu0 = t->wrapper ? cpu_us(t->wrapper_pid()) : 0;
      for (int i = 0; i < per_round; i++) {
        std::string id = "c-" + t->tag + "-" + std::to_string(t->next_id++);
        auto sandbox = t->sandbox(id);
        auto t0 = Clock::now();
        create_or_throw(*t->stub, sandbox, t->label);
        t->us.push_back(us_since(t0));
        delete_sandbox(*t->driver, id);
      }
      if (t->wrapper) t->wrapper_cpu += cpu_us(t->wrapper_pid()) - cpu0;
    }
  }
  for (auto* t : targets) std::sort(t->us.begin(), t->us.end());
}

// One Invoke straight to a hook server, with the request a wrapper sends:
// what a grpc hook cannot cost less than.
std::vector<double> invoke_round_trips(const std::string& socket, int calls) {
  auto stub = hookpb::LifecycleHook::NewStub(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  hookpb::HookRequest req;
  req.set_protocol_version(1);
  req.set_hook("allow-grpc");
  req.set_phase("validate");
  req.set_rpc("CreateSandbox");
  req.set_sandbox_id("rt");
  *req.mutable_sandbox() = bench_sandbox("rt");
  req.mutable_delegate()->set_name("memory");
  req.set_deadline_ms(2000);
  return timed_calls(calls, 200, [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    hookpb::HookResponse resp;
    auto st = stub->Invoke(&ctx, req, &resp);
    if (!st.ok()) throw std::runtime_error("Invoke on " + socket + ": " + st.error_message());
  });
}

Target* find(const std::vector<Target*>& targets, const std::string& tag) {
  for (auto* t : targets) {
    if (t->tag == tag) return t;
  }
  return nullptr;
}

// (b2) stands for what the defaults hook makes only if its driver stores
// the same spec as (c1)'s: checked once, so an edit to kDefaultsHook that
// bench_sandbox_as_defaults_leave_it misses does not go unseen.
void check_shaped(const std::vector<Target*>& targets) {
  Target* shaped = find(targets, "shaped");
  Target* defaults = find(targets, "defaults");
  if (!shaped || !defaults) return;
  std::string specs[2];
  Target* both[2] = {shaped, defaults};
  for (int i = 0; i < 2; i++) {
    create_or_throw(*both[i]->stub, both[i]->sandbox("shape-check"), both[i]->label);
    specs[i] = stored_spec(*both[i]->driver, "shape-check");
    delete_sandbox(*both[i]->driver, "shape-check");
  }
  if (specs[0].empty() || specs[0] != specs[1]) {
    throw std::runtime_error(
        "(b2) does not send the plan the defaults hook makes: update "
        "bench_sandbox_as_defaults_leave_it (bench/hook_configs.h) to match kDefaultsHook");
  }
  std::printf("  (b2) checked: its driver stores the same spec as (c1)'s\n");
}

// What quota pays to seed its count (and per create while the wrapper's
// watch is not live): one ListSandboxes of the delegate's sandboxes,
// straight to a driver holding the seeded set.
std::vector<double> list_round_trips(v1::ComputeDriver::Stub& driver, int calls) {
  return timed_calls(calls, 100, [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::ListSandboxesResponse resp;
    auto st = driver.ListSandboxes(&ctx, v1::ListSandboxesRequest(), &resp);
    if (!st.ok()) throw std::runtime_error("ListSandboxes: " + st.error_message());
  });
}

void print_creates(const std::vector<Target*>& targets, int rounds, int calls) {
  std::printf(
      "CreateSandbox, sequential: %d calls each (%d interleaved rounds, after 200 warm-up calls); every target has "
      "its own memory driver holding %d sandboxes; each created sandbox is deleted again (untimed)\n",
      calls, rounds, kSeededSandboxes);
  const Target* zero = find(targets, "zero");
  std::printf("  %-40s %8s %8s %11s %11s %13s\n", "", "p50 us", "p99 us", "p50 vs (b)", "p99 vs (b)", "wrapper cpu");
  for (const auto* t : targets) {
    std::printf("  %-40s %8.1f %8.1f ", t->label.c_str(), t->p(0.5), t->p(0.99));
    if (!t->wrapper) {
      std::printf("%11.1f %11.1f %13s\n", t->p(0.5) - zero->p(0.5), t->p(0.99) - zero->p(0.99), "-");
    } else {
      std::printf("%+11.1f %+11.1f %10.0f us\n", t->p(0.5) - zero->p(0.5), t->p(0.99) - zero->p(0.99),
                  t->wrapper_cpu / calls);
    }
  }
  std::printf("  (wrapper cpu: per create, including relaying the watch events of the create and of its delete)\n");
}

// A partial run's figure for the builtin target: ((c) - (b2)) / 3, and the
// same through the other build when it ran.
void print_per_builtin(const std::vector<Target*>& targets) {
  const Target* shaped = find(targets, "shaped");
  if (!shaped) return;
  for (const char* tag : {"builtin3", "builtin3-other"}) {
    if (const Target* t = find(targets, tag)) {
      double per = (t->p(0.5) - shaped->p(0.5)) / 3;
      std::printf("  %s: per builtin hook ((c) - (b2)) / 3 = %.1f us p50 (target < 20 us: %s)\n", t->label.c_str(), per,
                  per < 20 ? "met" : "missed");
    }
  }
}

void print_verdicts(const std::vector<Target*>& targets, const std::vector<double>& cpp_rt,
                    const std::vector<double>& py_rt) {
  const Target* zero = find(targets, "zero");
  const Target* builtin = find(targets, "builtin3");
  const Target* cpp = find(targets, "grpc-cpp");
  const Target* py = find(targets, "grpc-py");
  const Target* exec = find(targets, "exec");
  double per_builtin = (builtin->p(0.5) - zero->p(0.5)) / 3;
  double per_builtin_cpu = (builtin->wrapper_cpu - zero->wrapper_cpu) / builtin->us.size() / 3;
  std::printf(
      "  one Invoke round trip straight to the hook server (bench -> hook, 2000 calls): C++ p50 %.1f us, p99 "
      "%.1f us",
      quantile(cpp_rt, 0.5), quantile(cpp_rt, 0.99));
  if (!py_rt.empty()) std::printf("; Python p50 %.1f us, p99 %.1f us", quantile(py_rt, 0.5), quantile(py_rt, 0.99));
  std::printf("\n");
  // Not the target's figure: it holds what the base driver and the relay
  // spend on the bigger plan the defaults hook asks for, (b2) - (b) below.
  std::printf(
      "  per builtin hook with the bigger plan defaults makes: ((c) - (b)) / 3 = %.1f us p50, %.1f us wrapper cpu\n",
      per_builtin, per_builtin_cpu);
  // The base driver and the relay handle defaults' bigger plan whether a
  // hook made it or the client sent it: (b2) - (b) is that, not the hook.
  const Target* shaped = find(targets, "shaped");
  const Target* defaults = find(targets, "defaults");
  double plan_cost = shaped->p(0.5) - zero->p(0.5);
  double per_builtin_own = (builtin->p(0.5) - shaped->p(0.5)) / 3;
  std::printf(
      "  the bigger plan alone: (b2) - (b) = %.1f us p50, %.1f us wrapper cpu; the hooks' own cost: defaults (c1) - "
      "(b2) = %.1f us p50, %.1f us wrapper cpu; per builtin hook ((c) - (b2)) / 3 = %.1f us p50 (target < 20 us: "
      "%s)\n",
      plan_cost, (shaped->wrapper_cpu - zero->wrapper_cpu) / shaped->us.size(), defaults->p(0.5) - shaped->p(0.5),
      (defaults->wrapper_cpu - shaped->wrapper_cpu) / defaults->us.size(), per_builtin_own,
      per_builtin_own < 20 ? "met" : "missed");
  const Target* policy = find(targets, "policy");
  const Target* quota = find(targets, "quota");
  std::printf(
      "  a lone judging builtin (no plan change): policy (c2) - (b) = %.1f us p50, quota (c3) - (b) = %.1f us p50\n",
      policy->p(0.5) - zero->p(0.5), quota->p(0.5) - zero->p(0.5));
  double grpc_added = cpp->p(0.5) - zero->p(0.5);
  std::printf(
      "  grpc hook (C++): (e) - (b) = %.1f us p50 = %.2f x one Invoke round trip (target: about one round trip: %s)\n",
      grpc_added, grpc_added / quantile(cpp_rt, 0.5), grpc_added <= 1.5 * quantile(cpp_rt, 0.5) ? "met" : "missed");
  if (py) {
    std::printf("  grpc hook (Python): (f) - (b) = %.1f us p50 = %.2f x its Invoke round trip\n",
                py->p(0.5) - zero->p(0.5), (py->p(0.5) - zero->p(0.5)) / quantile(py_rt, 0.5));
  }
  std::printf("  exec hook: (d) - (b) = %.1f us p50 (a process per call: sh, then cat)\n", exec->p(0.5) - zero->p(0.5));
}

// ---- 2. 200 concurrent creates behind a 200 ms exec hook ----

struct Probe {
  std::vector<double> wrapper_us, driver_us;
  void sort() {
    std::sort(wrapper_us.begin(), wrapper_us.end());
    std::sort(driver_us.begin(), driver_us.end());
  }
};

// GetSandbox of a sandbox nobody creates, alternately through the wrapper
// (on the creates' own channel, as the gateway shares one) and straight to
// the driver: the driver's figures show what the busy machine alone costs.
void probe_once(v1::ComputeDriver::Stub& wrapper, v1::ComputeDriver::Stub& driver, Probe& out) {
  v1::GetSandboxRequest req;
  req.set_sandbox_id("probe");
  for (auto* target : {&wrapper, &driver}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    v1::GetSandboxResponse resp;
    auto t0 = Clock::now();
    auto st = target->GetSandbox(&ctx, req, &resp);
    if (!st.ok()) throw std::runtime_error("GetSandbox(probe): " + st.error_message());
    (target == &wrapper ? out.wrapper_us : out.driver_us).push_back(us_since(t0));
  }
}

struct BurstResult {
  double secs = 0;
  int ok = 0;
  std::string first_error;
  double wrapper_cpu_ms = 0;
};

BurstResult burst(v1::ComputeDriver::Stub& creates, v1::ComputeDriver::Stub& probe_wrapper,
                  v1::ComputeDriver::Stub& probe_driver, Probe& probe, pid_t wrapper_pid, const std::string& prefix,
                  int n) {
  struct Call {
    grpc::ClientContext ctx;
    v1::CreateSandboxRequest req;
    v1::CreateSandboxResponse resp;
  };
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < n; i++) {
    calls.push_back(std::make_unique<Call>());
    calls.back()->ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    *calls.back()->req.mutable_sandbox() = bench_sandbox(prefix + std::to_string(i));
  }
  std::mutex mu;
  std::condition_variable cv;
  int left = n;
  BurstResult result;
  Clock::time_point end;
  std::atomic<bool> done{false};
  double cpu0 = cpu_us(wrapper_pid);
  auto t0 = Clock::now();
  for (auto& c : calls) {
    creates.async()->CreateSandbox(&c->ctx, &c->req, &c->resp, [&](grpc::Status s) {
      std::lock_guard lock(mu);
      if (s.ok()) {
        result.ok++;
      } else if (result.first_error.empty()) {
        result.first_error = std::to_string(s.error_code()) + " " + s.error_message();
      }
      if (--left == 0) {
        end = Clock::now();
        done = true;
        cv.notify_all();
      }
    });
  }
  while (!done) probe_once(probe_wrapper, probe_driver, probe);
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return left == 0; });
  result.secs = std::chrono::duration<double>(end - t0).count();
  result.wrapper_cpu_ms = (cpu_us(wrapper_pid) - cpu0) / 1000;
  return result;
}

void slow_hook_bursts(const TempDir& dir, int bursts, const std::string& binary = {}) {
  constexpr int kCalls = 200;
  const int kBursts = bursts;
  const std::string tag = binary.empty() ? "slow" : "slow-other";
  std::string script = write_executable(dir, tag + "-sleep-200ms.sh",
                                        "#!/bin/sh\n# Reads its request, takes 200 ms, allows.\ncat >/dev/null\n"
                                        "sleep 0.2\necho '{\"allowed\": true}'\n");
  MemoryDriverProc memory(dir, "mem-" + tag, {"--log-level", "warn", "--schema", "kubernetes"});
  auto driver = stub_for(memory.socket);
  create_or_throw(*driver, bench_sandbox("probe"), "slow (probe sandbox)");
  WrapperSpec spec{"w-" + tag, "memory", "nested", {}};
  spec.endpoint_socket = memory.socket;
  spec.binary = binary;
  spec.extra_toml = "log_level = \"warn\"\n" + relay_toml();
  spec.extra_delegate_toml = exec_hook("sleep-200ms", script, "max_in_flight = 200\ntimeout_ms = 5000\n");
  WrapperProc wrapper(dir, spec);
  // One channel for the creates and the unrelated GetSandbox calls, as the
  // gateway has one connection to its driver.
  auto channel = grpc::CreateChannel("unix:" + wrapper.socket, grpc::InsecureChannelCredentials());
  auto creates = v1::ComputeDriver::NewStub(channel);
  auto gets = v1::ComputeDriver::NewStub(channel);
  create_or_throw(*creates, bench_sandbox("slow-warm"), "slow (warm-up)");

  Probe idle;
  for (int i = 0; i < 200; i++) probe_once(*gets, *driver, idle);  // warm-up
  idle = {};
  for (int i = 0; i < 2000; i++) probe_once(*gets, *driver, idle);
  idle.sort();

  std::printf(
      "200 concurrent CreateSandbox, each behind a 200 ms exec hook (sh: cat, sleep 0.2, echo; max_in_flight = 200, "
      "timeout_ms = 5000), one channel, %d bursts (wrapper pid %d):\n",
      kBursts, wrapper.proc->pid());
  std::fflush(stdout);
  Probe busy;
  std::vector<double> secs;
  for (int b = 0; b < kBursts; b++) {
    std::string prefix = "burst" + std::to_string(b) + "-";
    auto r = burst(*creates, *gets, *driver, busy, wrapper.proc->pid(), prefix, kCalls);
    secs.push_back(r.secs);
    std::printf("  burst %d: %d/%d OK in %.2f s; wrapper cpu %.0f ms%s%s\n", b + 1, r.ok, kCalls, r.secs,
                r.wrapper_cpu_ms, r.first_error.empty() ? "" : "; first error: ", r.first_error.c_str());
    for (int i = 0; i < kCalls; i++) delete_sandbox(*driver, prefix + std::to_string(i));
    std::this_thread::sleep_for(500ms);
  }
  busy.sort();
  std::sort(secs.begin(), secs.end());
  std::printf("  wall time: best %.2f s, median %.2f s (target: about 1 s on 2 cores, not 40 s: %s)\n", secs.front(),
              secs[secs.size() / 2], secs[secs.size() / 2] < 2.0 ? "met" : "missed");
  std::printf("  unrelated GetSandbox (alternating: through the wrapper, same channel | straight to the driver)\n");
  std::printf("    idle:         %5zu calls, wrapper p50 %7.1f us p99 %8.1f us | driver p50 %7.1f us p99 %8.1f us\n",
              idle.wrapper_us.size(), quantile(idle.wrapper_us, 0.5), quantile(idle.wrapper_us, 0.99),
              quantile(idle.driver_us, 0.5), quantile(idle.driver_us, 0.99));
  std::printf("    during bursts: %4zu calls, wrapper p50 %7.1f us p99 %8.1f us | driver p50 %7.1f us p99 %8.1f us\n",
              busy.wrapper_us.size(), quantile(busy.wrapper_us, 0.5), quantile(busy.wrapper_us, 0.99),
              quantile(busy.driver_us, 0.5), quantile(busy.driver_us, 0.99));
  std::printf("    wrapper hop alone (wrapper p50 - driver p50): idle %.1f us, during bursts %.1f us\n",
              quantile(idle.wrapper_us, 0.5) - quantile(idle.driver_us, 0.5),
              quantile(busy.wrapper_us, 0.5) - quantile(busy.driver_us, 0.5));
}

// Command line: `--only TAG[,TAG...]` measures those targets (and (b), the
// reference) for `--rounds N` rounds, printing the wrapper pids first, so
// that perf can attach (docs/performance.md); `--bursts N` repeats part 2
// N times (default 3), `--no-burst` skips it.
struct Options {
  std::vector<std::string> only;
  int rounds = 20;
  int bursts = 3;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--only" && i + 1 < argc) {
      std::string list = argv[++i];
      for (size_t start = 0; start <= list.size();) {
        size_t comma = std::min(list.find(',', start), list.size());
        o.only.push_back(list.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (arg == "--rounds" && i + 1 < argc) {
      o.rounds = std::max(1, std::stoi(argv[++i]));
    } else if (arg == "--no-burst") {
      o.bursts = 0;
    } else if (arg == "--bursts" && i + 1 < argc) {
      o.bursts = std::max(0, std::stoi(argv[++i]));
    } else {
      throw std::runtime_error(
          "usage: bench_hooks [--only TAG[,TAG...]] [--rounds N] [--no-burst | --bursts N]; tags: direct, "
          "zero, shaped, builtin3, defaults, policy, quota, exec, grpc-cpp, grpc-py");
    }
  }
  return o;
}

int run(const Options& options) {
  std::printf("bench/hooks: the hook chain over Unix sockets, %u cores, load average at start %s\n",
              std::thread::hardware_concurrency(), load_average().c_str());
  TempDir dir;
  HookServer cpp_hook(dir.file("allow-grpc.sock"));
  std::string py_socket = dir.file("pyhook.sock");
  auto py_hook = start_python_hook(dir, py_socket);
  std::string allow_sh = write_executable(
      dir, "allow.sh", "#!/bin/sh\n# Reads its request, allows.\ncat >/dev/null\necho '{\"allowed\": true}'\n");

  std::vector<std::unique_ptr<Target>> owned;
  owned.push_back(make_target(dir, "direct", "(a) direct to the memory driver", 0, "", true));
  owned.push_back(make_target(dir, "zero", "(b) wrapper, 0 hooks", 0, ""));
  owned.push_back(make_target(dir, "shaped", "(b2) wrapper, 0 hooks, sent (c1)'s plan", 0, ""));
  owned.back()->sandbox = [](const std::string& id) { return bench_sandbox_as_defaults_leave_it(id, "memory"); };
  owned.push_back(make_target(dir, "builtin3", "(c) 3 builtin: defaults, policy, quota", 3,
                              std::string(kDefaultsHook) + kPolicyHook + kQuotaHook));
  // The three through another build (OWRAP_BENCH_WRAPPER, below), in the same rounds.
  if (const char* other = std::getenv("OWRAP_BENCH_WRAPPER")) {
    owned.push_back(make_target(dir, "builtin3-other", std::string("(c') 3 builtin, ") + other, 3,
                                std::string(kDefaultsHook) + kPolicyHook + kQuotaHook, false, other));
  }
  owned.push_back(make_target(dir, "defaults", "(c1) builtin defaults alone", 1, kDefaultsHook));
  // OWRAP_BENCH_WRAPPER: another build's wrapper, run with the defaults hook
  // in the same rounds, to compare builds on a shared machine.
  if (const char* other = std::getenv("OWRAP_BENCH_WRAPPER")) {
    owned.push_back(make_target(dir, "defaults-other", std::string("(c1') defaults alone, ") + other, 1, kDefaultsHook,
                                false, other));
  }
  owned.push_back(make_target(dir, "policy", "(c2) builtin policy alone", 1, kPolicyHook));
  // And the policy hook alone through the other build, measured with (c2).
  if (const char* other = std::getenv("OWRAP_BENCH_WRAPPER")) {
    owned.push_back(
        make_target(dir, "policy-other", std::string("(c2') policy alone, ") + other, 1, kPolicyHook, false, other));
  }
  owned.push_back(make_target(dir, "quota", "(c3) builtin quota alone", 1, kQuotaHook));
  owned.push_back(make_target(dir, "exec", "(d) 1 exec hook (/bin/sh script)", 1, exec_hook("allow-sh", allow_sh)));
  owned.push_back(
      make_target(dir, "grpc-cpp", "(e) 1 grpc hook (C++, in the bench)", 1, grpc_hook("allow-grpc", cpp_hook.socket)));
  if (py_hook) {
    owned.push_back(make_target(dir, "grpc-py", "(f) 1 grpc hook (Python example)", 1, grpc_hook("pyhook", py_socket)));
  }
  std::vector<Target*> targets;
  for (auto& t : owned) {
    auto named = [&](const std::string& tag) {
      return std::find(options.only.begin(), options.only.end(), tag) != options.only.end();
    };
    bool wanted = options.only.empty() || t->tag == "zero" || t->tag == "shaped" || named(t->tag) ||
                  t->tag == "defaults-other" || (t->tag == "policy-other" && named("policy")) ||
                  (t->tag == "builtin3-other" && named("builtin3"));
    if (!wanted) continue;
    targets.push_back(t.get());
    if (!options.only.empty() && t->wrapper) std::printf("  %s: wrapper pid %d\n", t->tag.c_str(), t->wrapper_pid());
  }
  std::fflush(stdout);

  const int rounds = options.rounds, per_round = 100;
  check_shaped(targets);
  sequential_creates(targets, rounds, per_round);
  auto cpp_rt = invoke_round_trips(cpp_hook.socket, 2000);
  std::vector<double> py_rt;
  if (py_hook) py_rt = invoke_round_trips(py_socket, 2000);
  auto list_rt = list_round_trips(*targets[0]->driver, 1000);
  print_creates(targets, rounds, rounds * per_round);
  if (options.only.empty()) {
    print_verdicts(targets, cpp_rt, py_rt);
  } else {
    print_per_builtin(targets);
  }
  std::printf(
      "  one ListSandboxes straight to a driver (%d sandboxes; what quota lists to seed): p50 %.1f us, "
      "p99 %.1f us\n",
      kSeededSandboxes, quantile(list_rt, 0.5), quantile(list_rt, 0.99));

  std::fflush(stdout);
  owned.clear();  // their processes would only add noise below

  if (options.bursts > 0) slow_hook_bursts(dir, options.bursts);
  // The same bursts through another build's wrapper, after this one's.
  if (const char* other = std::getenv("OWRAP_BENCH_WRAPPER"); other && options.bursts > 0) {
    std::printf("part 2 again, through %s:\n", other);
    slow_hook_bursts(dir, options.bursts, other);
  }
  std::printf("load average at the end: %s\n", load_average().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Caught so that destructors stop every process the bench started.
  try {
    return run(parse_options(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_hooks: %s\n", e.what());
    return 1;
  }
}
