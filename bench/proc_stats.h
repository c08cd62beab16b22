// What a process costs, read from /proc, and order statistics of samples:
// shared by the benches.
#pragma once

#include <sys/types.h>

#include <vector>

namespace owrap::bench {

// Resident set size in KiB; -1 when the process is gone.
long rss_kb(pid_t pid);
long rss_kb(const std::vector<pid_t>& pids);
// utime+stime in microseconds.
double cpu_us(pid_t pid);
double cpu_us(const std::vector<pid_t>& pids);
// Context switches of all threads of a process.
long context_switches(pid_t pid);
long context_switches(const std::vector<pid_t>& pids);

// The q-quantile (0..1) of samples already sorted ascending; 0 when empty.
double quantile(const std::vector<double>& sorted, double q);

}  // namespace owrap::bench
