// bench/cost: what one relayed call costs the wrapper process, in CPU time
// and context switches, measured from /proc (schedstat: nanoseconds on a
// CPU, summed over the wrapper's threads). Load on a shared machine moves
// latency far more than these counts, so this is the figure to compare
// builds with while other work runs; bench_passthrough gives latency.
//
//   bench_cost [calls per rep (5000)] [reps (5)] [info] [create | shaped | policy | defaults | builtin3]
//
// Sequential GetSandbox calls through one wrapper (endpoint delegate, log
// level warn, or info with "info"), then 16 callers for one second.
// "create": sequential CreateSandbox calls (bench_hooks' sandbox) instead,
// each sandbox deleted again straight at the driver (the wrapper relays the
// watch events of both); "policy": the same through a wrapper whose one
// hook is the builtin policy (bench_hooks' (c2)), so that the difference of
// the two is what the staged path of a hook costs per create; "defaults"
// and "builtin3" likewise with bench_hooks' (c1) and (c) hooks, and
// "shaped" with no hook but the client sending the plan defaults makes
// ((b2)): defaults' own cost is "defaults" - "shaped". With
// OWRAP_BENCH_PAUSE=N it prints the wrapper's pid and waits N seconds before
// measuring, for `perf record -p`. With OWRAP_BENCH_CALLGRIND=1 the wrapper
// runs under valgrind's callgrind, which counts the instructions (user space
// only) of the measured calls alone: a figure no other load on the machine
// moves, for comparing builds; the syscalls a call makes are strace's to count.
// OWRAP_BENCH_CALLGRIND=<file> keeps the dump there, for callgrind_annotate.
// OWRAP_BENCH_RELAY=grpc|frames sets the wrapper's `relay`.
#include "bench/hook_configs.h"
#include "tests/support/harness.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <sys/stat.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <tuple>

using namespace owrap::test;
namespace v1 = openshell::compute::v1;
using Clock = std::chrono::steady_clock;

namespace {

struct Counters {
  double cpu_ns = 0;
  long switches = 0;
  long voluntary = 0;  // the thread blocked (waiting for I/O): load does not add these
};

Counters counters(pid_t pid) {
  Counters c;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream sched(task.path() / "schedstat");
    double ns = 0;
    if (sched >> ns) c.cpu_ns += ns;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.find("ctxt_switches:") == std::string::npos) continue;
      long v = std::stol(line.substr(line.find(':') + 1));
      c.switches += v;
      if (line.rfind("voluntary", 0) == 0) c.voluntary += v;
    }
  }
  return c;
}

// Per thread (name, cpu ns, switches), to see which threads a call wakes.
std::map<std::string, std::tuple<std::string, double, long>> threads(pid_t pid) {
  std::map<std::string, std::tuple<std::string, double, long>> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    std::ifstream sched(task.path() / "schedstat");
    double ns = 0;
    sched >> ns;
    long sw = 0;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.find("ctxt_switches:") != std::string::npos) sw += std::stol(line.substr(line.find(':') + 1));
    }
    out[task.path().filename().string()] = {name, ns, sw};
  }
  return out;
}

void report(const char* what, pid_t wrapper, pid_t driver, const Counters& w0, const Counters& d0, long calls,
            const char* extra_name, double extra) {
  Counters w1 = counters(wrapper), d1 = counters(driver);
  std::printf(
      "  %-10s %6ld calls  wrapper %6.1f us cpu, %4.2f switches (%4.2f voluntary) per call;  driver %6.1f us, %4.1f",
      what, calls, (w1.cpu_ns - w0.cpu_ns) / 1e3 / calls, double(w1.switches - w0.switches) / calls,
      double(w1.voluntary - w0.voluntary) / calls, (d1.cpu_ns - d0.cpu_ns) / 1e3 / calls,
      double(d1.switches - d0.switches) / calls);
  std::printf(";  %s %.1f\n", extra_name, extra);
}

int run(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 5000;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  bool info = false, create = false, shaped = false;
  std::string hooks, mode = "no hook";
  for (int i = 3; i < argc; i++) {
    std::string arg = argv[i];
    info = info || arg == "info";
    shaped = shaped || arg == "shaped";
    if (arg == "policy") hooks = owrap::bench::kPolicyHook;
    if (arg == "defaults") hooks = owrap::bench::kDefaultsHook;
    if (arg == "builtin3") {
      hooks = std::string(owrap::bench::kDefaultsHook) + owrap::bench::kPolicyHook + owrap::bench::kQuotaHook;
    }
    for (const char* m : {"create", "shaped", "policy", "defaults", "builtin3"}) {
      if (arg == m) {
        create = true;
        if (arg != "create") mode = arg;
      }
    }
  }
  TempDir dir;
  // bench_hooks' driver: its sandbox carries Kubernetes resources.
  std::vector<std::string> driver_args = {"--log-level", "warn"};
  if (create) driver_args.insert(driver_args.end(), {"--schema", "kubernetes"});
  MemoryDriverProc memory(dir, "memory", driver_args);
  WrapperSpec spec{"one", "memory", "nested", {}};
  spec.endpoint_socket = memory.socket;
  if (!info) spec.extra_toml = "log_level = \"warn\"\n";
  // OWRAP_BENCH_RELAY=grpc: gRPC's server serves the gateway's connections.
  if (const char* relay = std::getenv("OWRAP_BENCH_RELAY"))
    spec.extra_toml += "relay = \"" + std::string(relay) + "\"\n";
  if (!hooks.empty()) spec.extra_delegate_toml = hooks;
  const bool callgrind = std::getenv("OWRAP_BENCH_CALLGRIND") != nullptr;
  // OWRAP_BENCH_WRAPPER: another build's binary, to compare builds.
  const char* other = std::getenv("OWRAP_BENCH_WRAPPER");
  const std::string socket = dir.file("run-one/one.sock"), callgrind_out = dir.file("callgrind.out");
  std::filesystem::create_directories(dir.file("run-one"));
  ::chmod(dir.file("run-one").c_str(), 0700);
  write_file(dir.file("one.toml"), wrapper_toml(spec, socket));
  std::vector<std::string> command = {other ? other : wrapper_bin(), "run", "--config", dir.file("one.toml")};
  if (callgrind) {
    command.insert(command.begin(), {"/usr/bin/valgrind", "--tool=callgrind", "--instr-atstart=no",
                                     "--callgrind-out-file=" + callgrind_out});
  }
  // OWRAP_BENCH_WRAPPER_ENV="K=V": one variable for the wrapper alone (say,
  // GRPC_POLL_STRATEGY=poll), the driver and this client unchanged.
  std::map<std::string, std::string> env;
  if (const char* kv = std::getenv("OWRAP_BENCH_WRAPPER_ENV"); kv && std::strchr(kv, '=')) {
    env[std::string(kv, std::strchr(kv, '='))] = std::strchr(kv, '=') + 1;
  }
  Process wrapper_process(command, dir.file("one.log"), env);
  if (!wait_for_socket(socket, std::chrono::seconds(callgrind ? 120 : 15))) {
    throw std::runtime_error("the wrapper did not come up: " + wrapper_process.log());
  }
  {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("bench");
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    if (!stub_for(memory.socket)->CreateSandbox(&ctx, req, &resp).ok()) return 1;
  }
  const pid_t wpid = wrapper_process.pid(), dpid = memory.proc->pid();
  auto stub = stub_for(socket);
  auto driver = stub_for(memory.socket);
  v1::GetSandboxRequest req;
  req.set_sandbox_id("bench");
  long next_id = 0;
  auto call = [&] {
    if (!create) {
      grpc::ClientContext ctx;
      v1::GetSandboxResponse resp;
      if (!stub->GetSandbox(&ctx, req, &resp).ok()) throw std::runtime_error("GetSandbox failed");
      return;
    }
    std::string id = "c-" + std::to_string(next_id++);
    v1::CreateSandboxRequest create_req;
    *create_req.mutable_sandbox() =
        shaped ? owrap::bench::bench_sandbox_as_defaults_leave_it(id, "memory") : owrap::bench::bench_sandbox(id);
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    if (auto st = stub->CreateSandbox(&ctx, create_req, &resp); !st.ok()) {
      throw std::runtime_error("CreateSandbox failed: " + st.error_message());
    }
    grpc::ClientContext del_ctx;
    v1::DeleteSandboxRequest del;
    del.set_sandbox_id(id);
    v1::DeleteSandboxResponse del_resp;
    (void)driver->DeleteSandbox(&del_ctx, del, &del_resp);
  };
  for (int i = 0; i < 500; i++) call();
  if (callgrind) {
    std::string pid = std::to_string(wpid), out;
    run_command({"/usr/bin/callgrind_control", "--instr=on", pid}, &out);
    for (int i = 0; i < n; i++) call();
    run_command({"/usr/bin/callgrind_control", "--dump", pid}, &out);
    // The dump file gets a suffix; its "summary:" line is the instruction count.
    for (const auto& f : std::filesystem::directory_iterator(dir.path())) {
      if (f.path().filename().string().rfind("callgrind.out", 0) != 0) continue;
      std::ifstream in(f.path());
      for (std::string line; std::getline(in, line);) {
        if (line.rfind("summary:", 0) == 0) {
          std::printf("%s: %.0f instructions per call (%d calls)\n", f.path().filename().c_str(),
                      std::stod(line.substr(8)) / n, n);
        }
      }
      // OWRAP_BENCH_CALLGRIND=<file>: the dump is kept there, for callgrind_annotate.
      if (std::string keep = std::getenv("OWRAP_BENCH_CALLGRIND"); keep != "1" && !keep.empty()) {
        std::filesystem::copy_file(f.path(), keep, std::filesystem::copy_options::overwrite_existing);
      }
    }
    return 0;
  }
  if (const char* pause = std::getenv("OWRAP_BENCH_PAUSE")) {
    std::printf("wrapper pid %d\n", wpid);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(pause)));
  }
  std::printf("bench/cost: %s through one wrapper (log_level %s)\n",
              !create ? "GetSandbox" : ("CreateSandbox (+ delete at the driver), " + mode).c_str(),
              info ? "info" : "warn");
  auto threads0 = threads(wpid);
  for (int r = 0; r < reps; r++) {
    Counters w0 = counters(wpid), d0 = counters(dpid);
    std::vector<double> us;
    for (int i = 0; i < n; i++) {
      auto t0 = Clock::now();
      call();
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    report("sequential", wpid, dpid, w0, d0, n, "p50 us", us[us.size() / 2]);
  }
  std::printf("  per wrapper thread over the sequential calls (cpu us, switches per call):\n");
  for (const auto& [tid, t1] : threads(wpid)) {
    auto it = threads0.find(tid);
    double ns0 = it == threads0.end() ? 0 : std::get<1>(it->second);
    long sw0 = it == threads0.end() ? 0 : std::get<2>(it->second);
    double calls = double(n) * reps;
    if (std::get<2>(t1) - sw0 == 0) continue;
    std::printf("    %-8s %-18s %7.2f %6.3f\n", tid.c_str(), std::get<0>(t1).c_str(),
                (std::get<1>(t1) - ns0) / 1e3 / calls, (std::get<2>(t1) - sw0) / calls);
  }
  for (int r = 0; r < reps && !create; r++) {
    Counters w0 = counters(wpid), d0 = counters(dpid);
    std::atomic<long> calls{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    // One channel (one HTTP/2 connection) for all callers, as a gateway has.
    auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
    for (int t = 0; t < 16; t++) {
      ts.emplace_back([&] {
        auto s = v1::ComputeDriver::NewStub(channel);
        while (!stop) {
          grpc::ClientContext ctx;
          v1::GetSandboxResponse resp;
          if (s->GetSandbox(&ctx, req, &resp).ok()) calls++;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
    stop = true;
    for (auto& t : ts) t.join();
    report("16-way", wpid, dpid, w0, d0, calls.load(), "calls/s", double(calls.load()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cost: %s\n", e.what());
    return 1;
  }
}
