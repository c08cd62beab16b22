#include "bench/proc_stats.h"

#include "tests/support/harness.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

namespace owrap::bench {

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

long rss_kb(const std::vector<pid_t>& pids) {
  long total = 0;
  for (pid_t p : pids) total += rss_kb(p);
  return total;
}

double cpu_us(pid_t pid) {
  auto stat = test::proc_stat(pid);
  if (!stat) return 0;
  return static_cast<double>(stat->utime_ticks + stat->stime_ticks) * 1e6 / sysconf(_SC_CLK_TCK);
}

double cpu_us(const std::vector<pid_t>& pids) {
  double total = 0;
  for (pid_t p : pids) total += cpu_us(p);
  return total;
}

long context_switches(pid_t pid) {
  long total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "status");
    for (std::string line; std::getline(in, line);) {
      if (line.find("ctxt_switches:") != std::string::npos) total += std::stol(line.substr(line.find(':') + 1));
    }
  }
  return total;
}

long context_switches(const std::vector<pid_t>& pids) {
  long total = 0;
  for (pid_t p : pids) total += context_switches(p);
  return total;
}

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  return sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
}

}  // namespace owrap::bench
