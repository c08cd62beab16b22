// bench/passthrough: what the wrapper costs, in one run against the memory
// driver. Prints figures; asserts nothing (timing is not a test).
//   (a) direct to the memory driver, (b) through one wrapper, (c) through a
//   chain of three, (d) one wrapper with default settings, and, when
//   installed (bench/setup.sh), (h) HAProxy and (n) nginx as the
//   transparent hop a user might deploy instead: sequential GetSandbox
//   p50/p99 and 16-way throughput, interleaved; WatchSandboxes fan-out to
//   100 and 1000 watchers; RSS.
#include "bench/proc_stats.h"
#include "bench/proxies.h"
#include "tests/support/harness.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <thread>

using namespace owrap::test;
using owrap::bench::context_switches;
using owrap::bench::cpu_us;
using owrap::bench::rss_kb;
namespace v1 = openshell::compute::v1;
using Clock = std::chrono::steady_clock;

namespace {

// One target: its socket, the processes it costs, and what was observed.
// Each group of pids is one hop, summed (nginx: master and worker); group 0
// is the memory driver.
struct Target {
  std::string label;
  std::string socket;
  std::vector<std::vector<pid_t>> groups;
  std::unique_ptr<v1::ComputeDriver::Stub> stub;
  std::vector<double> us;
  std::vector<double> cpu_us;
  std::vector<long> switches;
  long calls_16way = 0;
  double secs_16way = 0;
  double hops_cpu_16way_us = 0;  // over every hop but the driver, during the 16-way rounds
  double p(double q) const { return us[static_cast<size_t>(q * (us.size() - 1))]; }
  double throughput() const { return calls_16way / secs_16way; }
  // Per call, over every hop but the driver.
  double hops_cpu_us(int calls) const {
    double sum = 0;
    for (size_t i = 1; i < cpu_us.size(); i++) sum += cpu_us[i];
    return sum / calls;
  }
  double hops_switches(int calls) const {
    double sum = 0;
    for (size_t i = 1; i < switches.size(); i++) sum += switches[i];
    return sum / calls;
  }
};

// Sequential GetSandbox calls, interleaved: each round runs `per_round`
// calls against every target in turn, so drift of this shared 2-core
// machine hits all targets alike rather than whichever runs last.
void sequential(std::vector<Target>& targets, int rounds, int per_round) {
  v1::GetSandboxRequest req;
  req.set_sandbox_id("bench");
  for (auto& t : targets) {
    t.stub = stub_for(t.socket);
    t.cpu_us.assign(t.groups.size(), 0);
    t.switches.assign(t.groups.size(), 0);
  }
  auto call = [&](Target& t) {
    grpc::ClientContext ctx;
    v1::GetSandboxResponse resp;
    auto st = t.stub->GetSandbox(&ctx, req, &resp);
    // Thrown, not aborted: main's handler lets destructors stop the proxies.
    if (!st.ok()) throw std::runtime_error(t.label + ": GetSandbox failed: " + st.error_message());
  };
  for (auto& t : targets) {
    for (int i = 0; i < 200; i++) call(t);  // warm-up
  }
  for (int r = 0; r < rounds; r++) {
    for (auto& t : targets) {
      std::vector<double> cpu0;
      std::vector<long> cs0;
      for (const auto& g : t.groups) cpu0.push_back(cpu_us(g)), cs0.push_back(context_switches(g));
      for (int i = 0; i < per_round; i++) {
        auto t0 = Clock::now();
        call(t);
        t.us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      for (size_t i = 0; i < t.groups.size(); i++) {
        t.cpu_us[i] += cpu_us(t.groups[i]) - cpu0[i];
        t.switches[i] += context_switches(t.groups[i]) - cs0[i];
      }
    }
  }
  for (auto& t : targets) std::sort(t.us.begin(), t.us.end());
}

// Successful calls of `threads` callers sharing one channel (one HTTP/2
// connection), as a gateway would, over `duration`.
long concurrent(const std::string& socket, int threads, std::chrono::milliseconds duration) {
  auto channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  std::atomic<long> calls{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&] {
      auto stub = v1::ComputeDriver::NewStub(channel);
      v1::GetSandboxRequest req;
      req.set_sandbox_id("bench");
      while (!stop) {
        grpc::ClientContext ctx;
        v1::GetSandboxResponse resp;
        if (stub->GetSandbox(&ctx, req, &resp).ok()) calls++;
      }
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& t : ts) t.join();
  return calls;
}

// 16-way throughput, interleaved like the sequential run.
void throughput(std::vector<Target>& targets, int rounds, std::chrono::milliseconds each) {
  auto hops_cpu = [](const Target& t) {
    double sum = 0;
    for (size_t i = 1; i < t.groups.size(); i++) sum += cpu_us(t.groups[i]);
    return sum;
  };
  for (int r = 0; r < rounds; r++) {
    for (auto& t : targets) {
      const double cpu0 = hops_cpu(t);
      t.calls_16way += concurrent(t.socket, 16, each);
      t.secs_16way += std::chrono::duration<double>(each).count();
      t.hops_cpu_16way_us += hops_cpu(t) - cpu0;
    }
  }
}

// A proxy is only worth measuring if it relays a gRPC call faithfully:
// the reply and an error status with its message (trailers).
bool relays_get_sandbox(const std::string& socket, std::string* why) {
  auto stub = stub_for(socket);
  {
    v1::GetSandboxRequest req;
    req.set_sandbox_id("bench");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetSandboxResponse resp;
    auto st = stub->GetSandbox(&ctx, req, &resp);
    if (!st.ok() || resp.sandbox().id() != "bench") {
      *why = "GetSandbox(bench): " + std::to_string(st.error_code()) + " " + st.error_message() + ", sandbox id \"" +
             resp.sandbox().id() + "\"";
      return false;
    }
  }
  v1::GetSandboxRequest req;
  req.set_sandbox_id("no-such-sandbox");
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetSandboxResponse resp;
  auto st = stub->GetSandbox(&ctx, req, &resp);
  if (st.error_code() != grpc::StatusCode::NOT_FOUND ||
      st.error_message().find("no-such-sandbox") == std::string::npos) {
    *why = "GetSandbox(no-such-sandbox): expected NOT_FOUND naming it, got " + std::to_string(st.error_code()) + " " +
           st.error_message();
    return false;
  }
  return true;
}

class CountingWatcher : public grpc::ClientReadReactor<v1::WatchSandboxesEvent> {
 public:
  CountingWatcher(v1::ComputeDriver::Stub* stub, std::atomic<long>& total) : total_(total) {
    stub->async()->WatchSandboxes(&ctx_, &req_, this);
    StartRead(&ev_);
    StartCall();
  }
  void OnReadInitialMetadataDone(bool ok) override { established = ok; }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    total_++;
    StartRead(&ev_);
  }
  void OnDone(const grpc::Status&) override { done = true; }
  void cancel() { ctx_.TryCancel(); }
  std::atomic<bool> established{false}, done{false};

 private:
  grpc::ClientContext ctx_;
  v1::WatchSandboxesRequest req_;
  v1::WatchSandboxesEvent ev_;
  std::atomic<long>& total_;
};

void fanout(const std::string& wrapper_socket, const std::string& memory_socket, pid_t wrapper_pid, int watchers,
            int creates) {
  // Several channels: one HTTP/2 connection per 100 streams.
  std::vector<std::unique_ptr<v1::ComputeDriver::Stub>> stubs;
  for (int i = 0; i < (watchers + 99) / 100; i++) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("bench.channel", i);
    stubs.push_back(v1::ComputeDriver::NewStub(
        grpc::CreateCustomChannel("unix:" + wrapper_socket, grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<long> total{0};
  std::vector<std::unique_ptr<CountingWatcher>> ws;
  for (int i = 0; i < watchers; i++) ws.push_back(std::make_unique<CountingWatcher>(stubs[i / 100].get(), total));
  wait_for([&] { return std::all_of(ws.begin(), ws.end(), [](auto& w) { return w->established.load(); }); },
           std::chrono::seconds(30));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long rss_watching = rss_kb(wrapper_pid);
  auto direct = stub_for(memory_socket);
  const long expected = static_cast<long>(watchers) * creates * 2;
  auto t0 = Clock::now();
  for (int i = 0; i < creates; i++) {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("fan-" + std::to_string(watchers) + "-" + std::to_string(i));
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    direct->CreateSandbox(&ctx, req, &resp);
  }
  wait_for([&] { return total.load() >= expected; }, std::chrono::seconds(120));
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  long rss_peak = rss_kb(wrapper_pid);
  std::printf(
      "watch fan-out %4d watchers: %ld/%ld events delivered in %.2f s = %.0f events/s; wrapper RSS %.1f MB "
      "with watchers open, %.1f MB after the burst\n",
      watchers, total.load(), expected, secs, total.load() / secs, rss_watching / 1024.0, rss_peak / 1024.0);
  for (auto& w : ws) w->cancel();
  wait_for([&] { return std::all_of(ws.begin(), ws.end(), [](auto& w) { return w->done.load(); }); },
           std::chrono::seconds(30));
}

void print_sequential(const std::vector<Target>& targets, int rounds, int calls) {
  std::printf(
      "sequential (%d calls each, %d interleaved rounds)   p50 us   p99 us   cpu us/call, switches/call: driver; "
      "each hop\n",
      calls, rounds);
  for (const auto& t : targets) {
    std::printf("  %-26s %7.1f  %7.1f  ", t.label.c_str(), t.p(0.5), t.p(0.99));
    for (size_t i = 0; i < t.groups.size(); i++) {
      std::printf(" %.0f, %.1f%s", t.cpu_us[i] / calls, double(t.switches[i]) / calls, i == 0 ? ";" : "");
    }
    std::printf("\n");
  }
  const double a = targets[0].p(0.5), b = targets[1].p(0.5), c = targets[2].p(0.5);
  std::printf("  ratios p50: b/a = %.2f (target <= 2.0), c/a = %.2f (target <= 4.0)\n", b / a, c / a);
}

// The side-by-side table: every target against (a).
void print_side_by_side(const std::vector<Target>& targets, int calls, std::chrono::milliseconds each, int rounds) {
  const Target& direct = targets[0];
  std::printf(
      "side by side (16-way: one channel, 16 callers, %d x %.1f s interleaved; hop cpu/switches: per call, summed "
      "over the hop's processes, driver excluded)\n",
      rounds, std::chrono::duration<double>(each).count());
  std::printf("  %-26s %7s %7s %9s %9s %11s %11s %13s %14s\n", "", "p50 us", "p99 us", "calls/s", "p50 x(a)",
              "calls % (a)", "hop cpu us", "hop switches", "16-way cpu us");
  for (const auto& t : targets) {
    std::printf("  %-26s %7.1f %7.1f %9.0f %9.2f %10.0f%% ", t.label.c_str(), t.p(0.5), t.p(0.99), t.throughput(),
                t.p(0.5) / direct.p(0.5), 100 * t.throughput() / direct.throughput());
    if (t.groups.size() > 1) {
      std::printf("%11.0f %13.1f %14.1f\n", t.hops_cpu_us(calls), t.hops_switches(calls),
                  t.hops_cpu_16way_us / std::max<long>(t.calls_16way, 1));
    } else {
      std::printf("%11s %13s %14s\n", "-", "-", "-");
    }
  }
}

// False (after saying why) when the proxy does not relay faithfully: then
// its figures would mean nothing.
bool add_proxy(std::vector<Target>& targets, const owrap::bench::ProxyProc* proxy, pid_t driver) {
  if (proxy == nullptr) return true;
  std::string why;
  if (!relays_get_sandbox(proxy->socket, &why)) {
    std::fprintf(stderr, "%s does not relay GetSandbox: %s\n%s\n", proxy->label.c_str(), why.c_str(),
                 proxy->logs().c_str());
    return false;
  }
  targets.push_back({proxy->label, proxy->socket, {{driver}, proxy->pids()}});
  return true;
}

int run() {
  TempDir dir;
  MemoryDriverProc memory(dir, "memory", {"--log-level", "warn"});
  auto endpoint_wrapper = [&](const std::string& name, const std::string& delegate, const std::string& socket,
                              bool tuned = true, const std::string& binary = {}) {
    WrapperSpec spec{name, delegate, "nested", {}};
    spec.endpoint_socket = socket;
    spec.binary = binary;
    if (tuned) spec.extra_toml = "log_level = \"warn\"\nwatch_queue_capacity = 4096\n";
    return std::make_unique<WrapperProc>(dir, spec);
  };
  auto one = endpoint_wrapper("one", "memory", memory.socket);
  auto c1 = endpoint_wrapper("c1", "memory", memory.socket);
  auto c2 = endpoint_wrapper("c2", "c1", c1->socket);
  auto c3 = endpoint_wrapper("c3", "c2", c2->socket);
  auto plain = endpoint_wrapper("plain", "memory", memory.socket, false);
  // The same wrapper with gRPC's server serving the gateway's connections
  // (relay = "grpc"): what the frame relay is measured against.
  WrapperSpec grpc_spec{"grpcrelay", "memory", "nested", {}};
  grpc_spec.endpoint_socket = memory.socket;
  grpc_spec.extra_toml = "log_level = \"warn\"\nwatch_queue_capacity = 4096\nrelay = \"grpc\"\n";
  auto grpc_relay = std::make_unique<WrapperProc>(dir, grpc_spec);
  // OWRAP_BENCH_WRAPPER: another build's wrapper as (b'), in the same
  // rounds as (b), to compare builds on a shared machine.
  const char* other_binary = std::getenv("OWRAP_BENCH_WRAPPER");
  auto other = other_binary ? endpoint_wrapper("other", "memory", memory.socket, true, other_binary) : nullptr;
  auto haproxy = owrap::bench::start_haproxy(dir, memory.socket);
  auto nginx = owrap::bench::start_nginx(dir, memory.socket);

  {
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = make_sandbox("bench");
    grpc::ClientContext ctx;
    v1::CreateSandboxResponse resp;
    if (!stub_for(memory.socket)->CreateSandbox(&ctx, req, &resp).ok()) return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long idle_rss = rss_kb(one->proc->pid());
  long idle_haproxy = haproxy ? rss_kb(haproxy->pids()) : 0, idle_nginx = nginx ? rss_kb(nginx->pids()) : 0;

  std::printf("bench/passthrough: GetSandbox over Unix sockets, %u cores\n", std::thread::hardware_concurrency());
  const pid_t driver = memory.proc->pid();
  std::vector<Target> targets;
  targets.push_back({"(a) direct", memory.socket, {{driver}}});
  targets.push_back({"(b) one wrapper", one->socket, {{driver}, {one->proc->pid()}}});
  if (other)
    targets.push_back({"(b') one wrapper, OWRAP_BENCH_WRAPPER", other->socket, {{driver}, {other->proc->pid()}}});
  targets.push_back(
      {"(c) chain of three", c3->socket, {{driver}, {c1->proc->pid()}, {c2->proc->pid()}, {c3->proc->pid()}}});
  targets.push_back({"(d) one wrapper, defaults", plain->socket, {{driver}, {plain->proc->pid()}}});
  targets.push_back({"(g) one wrapper, relay grpc", grpc_relay->socket, {{driver}, {grpc_relay->proc->pid()}}});
  if (!add_proxy(targets, haproxy.get(), driver) || !add_proxy(targets, nginx.get(), driver)) return 1;

  const int rounds = 20, per_round = 250, calls = rounds * per_round;
  sequential(targets, rounds, per_round);
  print_sequential(targets, rounds, calls);
  const int tp_rounds = 4;
  const auto each = std::chrono::milliseconds(1000);
  throughput(targets, tp_rounds, each);
  print_side_by_side(targets, calls, each, tp_rounds);
  std::printf(
      "  (b), (c): log_level warn; (d): wrapper defaults (log_level info: one access-log line per call); "
      "HAProxy: mode http, h2 both sides, nbthread default (one thread per CPU), no log; nginx: grpc_pass, "
      "worker_processes 1, upstream keepalive, access_log off\n");
  std::printf("idle RSS: wrapper %.1f MB (target < 30 MB)", idle_rss / 1024.0);
  if (haproxy) std::printf(", HAProxy %.1f MB", idle_haproxy / 1024.0);
  if (nginx) std::printf(", nginx %.1f MB (master + worker)", idle_nginx / 1024.0);
  std::printf("\n");
  fanout(one->socket, memory.socket, one->proc->pid(), 100, 100);
  fanout(one->socket, memory.socket, one->proc->pid(), 1000, 100);
  return 0;
}

}  // namespace

int main() {
  // Caught so that destructors stop every process the bench started (an
  // nginx master left to die by std::terminate would orphan its worker).
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_passthrough: %s\n", e.what());
    return 1;
  }
}
