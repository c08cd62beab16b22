// HAProxy and nginx as transparent gRPC hops in front of a driver socket:
// what a platform engineer who needs no wrapper features would deploy. The
// bench compares the wrapper with them on the same sockets and driver.
#pragma once

#include "tests/support/harness.h"

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace owrap::bench {

// A reverse proxy listening on `socket` and relaying HTTP/2 to a driver.
struct ProxyProc {
  std::string label;   // e.g. "HAProxy 2.6.12 (nbthread default)"
  std::string socket;  // where clients connect
  std::unique_ptr<test::Process> proc;
  std::string error_log;  // besides the process's stderr, if any
  // Everything the proxy said, for a failure message.
  std::string logs() const;
  // The proxy's processes now: the main process, then its children (nginx
  // workers), so CPU and context switches can be summed over all of them.
  std::vector<pid_t> pids() const;
};

// Both return nullptr after printing why when the binary is not installed
// (the bench then skips that column); they throw when the proxy is
// installed but does not come up, which is a bench bug worth seeing. Up
// means listening, not relaying: the bench checks that separately.
std::unique_ptr<ProxyProc> start_haproxy(const test::TempDir& dir, const std::string& driver_socket);
std::unique_ptr<ProxyProc> start_nginx(const test::TempDir& dir, const std::string& driver_socket);

}  // namespace owrap::bench
