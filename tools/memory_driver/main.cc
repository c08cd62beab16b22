// openshell-driver-memory: see memory_driver.h. Launch convention as the
// upstream drivers: --bind-socket PATH (env OPENSHELL_COMPUTE_DRIVER_SOCKET),
// --log-level (env OPENSHELL_LOG_LEVEL).
#include "common/io_thread.h"
#include "common/log.h"
#include "common/serve.h"
#include "common/signals.h"
#include "tools/memory_driver/memory_driver.h"

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

namespace {

void usage() {
  std::cerr << "usage: openshell-driver-memory --bind-socket PATH [--log-level LEVEL] [--state-file PATH]\n"
               "       [--fail RPC=CODE]... [--delay RPC=MS]... [--record PATH [--record-arrivals]]\n"
               "       [--name NAME]\n"
               "       [--driver-version V] [--default-image IMAGE] [--gateway-manages-lifecycle]\n"
               "       [--listener loopback|default-route|exact:ADDR]... [--watch-queue N]\n"
               "       [--expected-peer-pid PID] [--allow-same-uid-peer] [--reply-garbage RPC]...\n"
               "       [--lazy-headers] [--echo-token] [--schema kubernetes|docker|podman|vm]\n";
}

}  // namespace

int main(int argc, char** argv) {
  // First: every thread created later inherits the blocked signals.
  owrap::SignalWatcher signals("memory driver");
  owrap::LogShutdownGuard flush_log_on_return;
  owrap::route_library_logs();
  owrap::memory::Options options;
  std::string socket_path;
  std::string log_level = "info";
  if (const char* env = std::getenv("OPENSHELL_COMPUTE_DRIVER_SOCKET")) socket_path = env;
  if (const char* env = std::getenv("OPENSHELL_LOG_LEVEL")) log_level = env;

  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "openshell-driver-memory: " << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    std::string error;
    if (arg == "--bind-socket")
      socket_path = next();
    else if (arg == "--log-level")
      log_level = next();
    else if (arg == "--state-file")
      options.state_file = next();
    else if (arg == "--record")
      options.record_file = next();
    else if (arg == "--record-arrivals")
      options.record_arrivals = true;
    else if (arg == "--name")
      options.driver_name = next();
    else if (arg == "--driver-version")
      options.driver_version = next();
    else if (arg == "--default-image")
      options.default_image = next();
    else if (arg == "--gateway-manages-lifecycle")
      options.gateway_manages_lifecycle = true;
    else if (arg == "--listener")
      options.listener_requirements.push_back(next());
    else if (arg == "--watch-queue")
      options.watch_queue_capacity = std::stoul(next());
    else if (arg == "--lazy-headers")
      options.lazy_headers = true;
    else if (arg == "--echo-token")
      options.echo_token = true;
    else if (arg == "--expected-peer-pid")
      next();  // accepted for VM-driver compatibility
    else if (arg == "--allow-same-uid-peer") {
    } else if (arg == "--fail" || arg == "--delay") {
      if (!owrap::memory::parse_fault_flag(next(), arg == "--delay", options.global_faults, error)) {
        std::cerr << "openshell-driver-memory: " << arg << ": " << error << "\n";
        return 2;
      }
    } else if (arg == "--reply-garbage") {
      if (!owrap::memory::parse_reply_garbage_flag(next(), options, error)) {
        std::cerr << "openshell-driver-memory: --reply-garbage: " << error << "\n";
        return 2;
      }
    } else if (arg == "--schema") {
      std::string name = next();
      auto schema = owrap::memory::parse_driver_schema(name);
      if (!schema) {
        std::cerr << "openshell-driver-memory: --schema: unknown schema \"" << name
                  << "\" (kubernetes, docker, podman, vm or none)\n";
        return 2;
      }
      options.schema = *schema;
    } else if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else {
      std::cerr << "openshell-driver-memory: unknown argument " << arg << "\n";
      usage();
      return 2;
    }
  }
  auto level = owrap::parse_log_level(log_level);
  if (!level) {
    std::cerr << "openshell-driver-memory: unknown log level " << log_level << "\n";
    return 2;
  }
  owrap::Logger::instance().set_level(*level);
  if (socket_path.empty()) {
    std::cerr << "openshell-driver-memory: --bind-socket PATH (or OPENSHELL_COMPUTE_DRIVER_SOCKET) is required\n";
    return 2;
  }

  owrap::IoThread io_thread;
  boost::asio::io_context& io = io_thread.io();

  owrap::memory::MemoryDriver driver(io, options);
  if (auto err = driver.load_state(); !err.empty()) {
    owrap::log_error(err);
    io_thread.stop();
    return 1;
  }
  auto server = owrap::UdsGrpcServer::start(socket_path, {&driver}, driver.extension_service(), "memory driver");
  if (!server) {
    owrap::log_error("cannot serve", {{"error", server.error()}});
    io_thread.stop();
    return 1;
  }
  owrap::log_info("memory driver serving", {{"socket", socket_path}, {"pid", ::getpid()}});
  int sig = signals.wait_for_termination();
  owrap::log_info("shutting down", {{"signal", strsignal(sig)}});
  driver.shutdown_watchers();
  // Calls in flight get up to 2 s; gRPC's own grace would also wait for
  // idle connections (a wrapper's channel stays open), so it gets none.
  server.value()->stop_accepting();
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
       driver.active_calls() > 0 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  server.value()->shutdown(std::chrono::milliseconds(0));
  io_thread.stop();
  return 0;
}
