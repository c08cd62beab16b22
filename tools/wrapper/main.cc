// openshell-driver-wrapper: run | ctl | check-config | version.
#include "common/log.h"
#include "proxy/config.h"
#include "proxy/wrapper.h"
#include "tools/wrapper/ctl.h"
#include "tools/wrapper/plan_command.h"

#include <cstdlib>
#include <iostream>

namespace {

constexpr const char* kUsage =
    "usage: openshell-driver-wrapper run --config FILE.toml [--bind-socket PATH] [--log-level LEVEL]\n"
    "       openshell-driver-wrapper ctl --socket PATH VERB ...   (ctl --help)\n"
    "       openshell-driver-wrapper check-config FILE.toml\n"
    "       openshell-driver-wrapper plan --config FILE.toml [--sandbox FILE|-] [--validate-delegate]\n"
    "       openshell-driver-wrapper version\n";

int run(const std::vector<std::string>& args) {
  std::string config_path, socket, socket_source, level;
  // The upstream launch convention overrides the file, so a wrapper can be
  // launched exactly like a driver, including by another wrapper.
  if (const char* env = std::getenv("OPENSHELL_COMPUTE_DRIVER_SOCKET")) {
    socket = env;
    socket_source = "OPENSHELL_COMPUTE_DRIVER_SOCKET";
  }
  if (const char* env = std::getenv("OPENSHELL_LOG_LEVEL")) level = env;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a != "--config" && a != "--bind-socket" && a != "--log-level") {
      std::cerr << "openshell-driver-wrapper run: unknown argument " << a << "\n" << kUsage;
      return 2;
    }
    if (i + 1 >= args.size()) {
      std::cerr << "openshell-driver-wrapper run: " << a << " needs a value\n" << kUsage;
      return 2;
    }
    if (a == "--config") {
      config_path = args[++i];
    } else if (a == "--bind-socket") {
      socket = args[++i];
      socket_source = "--bind-socket";
    } else {
      level = args[++i];
    }
  }
  if (config_path.empty()) {
    std::cerr << "openshell-driver-wrapper run: --config FILE.toml is required\n";
    return 2;
  }
  auto cfg = owrap::load_config(config_path);
  if (!cfg) {
    std::cerr << cfg.error() << "\n";
    return 2;
  }
  if (!socket.empty()) {
    cfg->socket = socket;
    cfg->socket_source = socket_source;
  }
  if (!level.empty()) {
    auto l = owrap::parse_log_level(level);
    if (!l) {
      std::cerr << "openshell-driver-wrapper run: unknown log level " << level << "\n";
      return 2;
    }
    cfg->log_level = *l;
  }
  return owrap::run_wrapper(std::move(cfg.value()));
}

int check_config(const std::vector<std::string>& args) {
  if (args.size() != 1) {
    std::cerr << kUsage;
    return 2;
  }
  auto cfg = owrap::load_config(args[0]);
  if (!cfg) {
    std::cerr << cfg.error() << "\n";
    return 1;
  }
  nlohmann::json out = cfg->to_json();
  std::string error;
  if (!owrap::check_hooks(cfg.value(), out, error)) {
    std::cerr << error << "\n";
    return 1;
  }
  std::cout << owrap::printable_json(out) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  owrap::LogShutdownGuard flush_log_on_return;
  owrap::route_library_logs();
  owrap::skip_mutex_deadlock_detection();
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "run") return run(args);
  if (cmd == "ctl") return owrap::run_ctl(args);
  if (cmd == "check-config") return check_config(args);
  if (cmd == "plan") return owrap::run_plan(args);
  if (cmd == "version" || cmd == "--version") {
    std::cout << "openshell-driver-wrapper " << OWRAP_VERSION << "\n";
    return 0;
  }
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  std::cerr << "openshell-driver-wrapper: unknown command " << cmd << "\n" << kUsage;
  return 2;
}
