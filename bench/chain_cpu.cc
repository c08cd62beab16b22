// bench/chain_cpu: what the hook chain's stages cost on the call's thread,
// in-process, without sockets: the part of bench/hooks' figures that is the
// wrapper's own work for builtin hooks. For each configuration it runs, per
// CreateSandbox, the "hooks" stage, the "hooks.apply" stage and the stages'
// `finished` step, as the pipeline does, and prints the time per create.
// quota counts from a live watch feed, seeded by one list of 100 sandboxes
// (5 teams) that answers at once.
// Prints figures; asserts nothing (timing is not a test). Run with a
// malloc counter preloaded (`LD_PRELOAD=build/bench/malloc_count.so`) and
// it also prints the heap allocations per create, which decide how the
// chain fares on a cold cache.
#include "bench/hook_configs.h"
#include "bench/proc_stats.h"
#include "common/io_thread.h"
#include "common/log.h"
#include "hooks/hook_chain.h"
#include "hooks/hook_config.h"
#include "hooks/hook_factory.h"
#include "hooks/sandbox_feed.h"

#include <toml++/toml.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <vector>

using namespace owrap;
namespace v1 = openshell::compute::v1;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<v1::DriverSandbox> fleet() {
  static const char* teams[] = {"blue", "red", "green", "gold", "grey"};
  std::vector<v1::DriverSandbox> out;
  for (int i = 0; i < 100; i++) out.push_back(bench::bench_sandbox("seed-" + std::to_string(i), teams[i % 5]));
  return out;
}

std::unique_ptr<HookChain> make_chain(IoThread& io, const std::string& toml_text) {
  toml::table doc = toml::parse(toml_text);
  std::vector<std::string> errors;
  TomlSection root(doc, "", errors);
  HookChainConfig config;
  config.hooks = read_hook_specs(root);
  if (!errors.empty()) throw std::runtime_error("bench config: " + errors.front());
  static const std::vector<v1::DriverSandbox> listed = fleet();
  // The wrapper's watch is live: quota seeds once, then counts from events.
  static const auto feed = [] {
    auto f = std::make_shared<SandboxFeed>();
    f->set_live(true);
    return f;
  }();
  HookEnvironment env{io.io(), "bench",
                      [](Clock::time_point, HookEnvironment::ListDone done) { done(grpc::Status::OK, listed); }, feed};
  auto hooks = make_hooks(config.hooks, env);
  if (!hooks) throw std::runtime_error("bench hooks: " + hooks.error());
  auto chain = std::make_unique<HookChain>(HookChainOptions{"bench", "memory", "driver_config.bench", config},
                                           std::move(hooks.value()));
  chain->start();
  return chain;
}

// The preloaded counter, if any.
unsigned long (*malloc_count())() {
  static auto* fn = reinterpret_cast<unsigned long (*)()>(dlsym(RTLD_DEFAULT, "owrap_malloc_count"));
  return fn;
}

// One create through the chain's stages; the request is built outside the
// timed part, as the relay has it before the stages run.
double one_create(std::vector<Stage>& stages, const std::string& id, unsigned long& allocations) {
  v1::CreateSandboxRequest request;
  *request.mutable_sandbox() = bench::bench_sandbox(id);
  CallState state;
  state.rpc = Rpc::kCreateSandbox;
  state.sandbox_id = id;
  auto* count = malloc_count();
  unsigned long allocations0 = count ? count() : 0;
  auto t0 = Clock::now();
  for (auto& stage : stages) {
    if (!stage.before) continue;
    StepResult r = stage.before(state, request, Resume());
    if (r.is_suspended()) throw std::runtime_error(stage.name + " suspended: a builtin chain should not");
    if (!r.status().ok()) throw std::runtime_error(stage.name + ": " + r.status().error_message());
  }
  for (auto& stage : stages) {
    if (stage.finished) stage.finished(state, grpc::Status::OK, DelegateOutcome::kCommitted);
  }
  state.hook_run.reset();
  double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  if (count) allocations += count() - allocations0;
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  // bench_chain_cpu [CALLS [ROW]]: ROW picks the rows whose label starts with it (for perf).
  int calls = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20000;
  std::string only = argc > 2 ? argv[2] : "";
  Logger::instance().set_level(LogLevel::kWarn);
  struct Row {
    const char* label;
    std::string toml;
  };
  std::vector<Row> rows = {
      {"policy", bench::kPolicyHook},
      {"defaults", bench::kDefaultsHook},
      {"quota", bench::kQuotaHook},
      {"defaults + policy + quota", std::string(bench::kDefaultsHook) + bench::kPolicyHook + bench::kQuotaHook},
  };
  std::printf("bench/chain_cpu: the hook chain's stages per CreateSandbox, in-process, %d creates each\n", calls);
  std::printf("  %-28s %9s %9s %9s\n", "hooks", "p50 us", "p99 us", "mean us");
  try {
    IoThread io;
    for (const Row& row : rows) {
      if (std::string(row.label).rfind(only, 0) != 0) continue;
      auto chain = make_chain(io, row.toml);
      auto stages = chain->stages();
      unsigned long allocations = 0;
      for (int i = 0; i < calls / 10; i++) one_create(stages, "warm-" + std::to_string(i), allocations);
      allocations = 0;
      std::vector<double> us;
      us.reserve(calls);
      for (int i = 0; i < calls; i++) us.push_back(one_create(stages, "c-" + std::to_string(i), allocations));
      double sum = 0;
      for (double u : us) sum += u;
      std::sort(us.begin(), us.end());
      std::printf("  %-28s %9.1f %9.1f %9.1f", row.label, bench::quantile(us, 0.5), bench::quantile(us, 0.99),
                  sum / calls);
      if (malloc_count()) std::printf("  %7.0f allocations", static_cast<double>(allocations) / calls);
      std::printf("\n");
      chain->stop();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_chain_cpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
