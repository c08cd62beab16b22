// Real processes on temporary Unix sockets: the test harness.
#pragma once

#include "compute_driver.grpc.pb.h"

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace owrap::test {

namespace v1 = openshell::compute::v1;

std::string wrapper_bin();
std::string memory_bin();

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A child process with stderr (and stdout) captured to a file; killed on
// destruction.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_file, std::map<std::string, std::string> env = {},
          std::string run_as_user = {});
  ~Process();
  pid_t pid() const { return pid_; }
  void signal(int sig);
  // Waits for exit and returns the exit code (or 128+signal); -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  bool running();
  std::string log() const;
  const std::string& log_file() const { return log_file_; }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string log_file_;
};

bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(10));
bool wait_for_socket(const std::string& path, std::chrono::milliseconds timeout = std::chrono::seconds(10));
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);
// `text` (a script with its #! line) as the executable file dir/<name>; its path.
std::string write_executable(const TempDir& dir, const std::string& name, const std::string& text);

std::unique_ptr<v1::ComputeDriver::Stub> stub_for(const std::string& socket);

// A memory driver serving on dir/<name>.sock.
struct MemoryDriverProc {
  MemoryDriverProc(const TempDir& dir, const std::string& name, std::vector<std::string> extra = {});
  std::string socket;
  std::string record;
  std::unique_ptr<Process> proc;
};

struct WrapperSpec {
  std::string name = "acme";
  std::string delegate_name = "memory";
  std::string config_mode = "nested";
  // Either a managed command or an endpoint socket path.
  std::vector<std::string> command;
  std::string endpoint_socket;
  std::string extra_toml;  // appended to [wrapper]
  std::string extra_delegate_toml;
  int ready_timeout_ms = 10000;
  std::string binary;  // the wrapper to run; this build's when empty (benches compare builds)
};

std::string wrapper_toml(const WrapperSpec& spec, const std::string& socket);

struct WrapperProc {
  WrapperProc(const TempDir& dir, const WrapperSpec& spec);
  std::string socket;
  std::string config;
  std::unique_ptr<Process> proc;
};

// A managed memory driver command line for a wrapper config.
std::vector<std::string> memory_command(const std::string& record_file = {}, std::vector<std::string> extra = {});
// Writes `inner`'s config to dir/<name>.toml and returns the delegate
// command that launches that wrapper, upstream style: a link in a chain.
std::vector<std::string> wrapper_command(const TempDir& dir, const WrapperSpec& inner);

// Runs a command to completion; returns exit code, stdout in `out`.
int run_command(const std::vector<std::string>& argv, std::string* out, std::string* err = nullptr,
                const std::string& stdin_text = {}, const std::string& run_as_user = {});

// Lines of a JSON-lines file parsed as JSON-ish substrings: true if any line contains `needle`.
bool file_contains(const std::string& path, const std::string& needle);

// Pids from a wrapper log's "delegate started" lines, in start order.
std::vector<pid_t> delegate_pids(const std::string& wrapper_log);

// One unary call of any method path with raw request bytes (a method this
// build does not know, or bytes no message type parses); waits at most 10 s.
grpc::Status generic_unary(const std::string& socket, const std::string& method, const std::string& bytes);

v1::DriverSandbox make_sandbox(const std::string& id, const std::string& driver_config_json = {});

// Debian's /usr/bin/python3 when there is one (python3-grpcio is installed
// for it; a python3 earlier in PATH may lack it), else "python3".
std::string system_python3();
// True when system_python3() can import grpc and google.protobuf (the
// Python hook examples need both).
bool python_grpc_available();

// One process as /proc/<pid>/stat shows it. A process can vanish between
// the open and the read (the read then fails with ESRCH, which an ifstream's
// iterator turns into an exception), so every test reads /proc through these.
struct ProcStat {
  pid_t pid = 0;
  char state = 0;  // 'R', 'S', 'Z', ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
  long utime_ticks = 0;
  long stime_ticks = 0;
};
// nullopt once the process is gone.
std::optional<ProcStat> proc_stat(pid_t pid);
// Every process readable now.
std::vector<ProcStat> all_processes();
// Gone, or a zombie nobody reaped yet: either way not running.
bool process_dead(pid_t pid);

// True while a process of group `pgid` runs. A killed orphan may linger as
// a zombie until init reaps it: dead, and not counted.
bool group_alive(pid_t pgid);

// Whether process `pid` blocks `sig` (SigBlk of /proc/<pid>/status, its main
// thread): a program that takes signals through a SignalWatcher blocks them
// first, so from then on the signal is handled, not fatal. False for a
// process that is gone. A test that signals a process it just started waits
// for this instead of sleeping.
bool blocks_signal(pid_t pid, int sig);

// Raw bytes on a Unix socket, for tests that speak HTTP/2 frame by frame:
// a blocking connection (-1 when refused), and a send of every byte (false
// once the peer is gone).
int raw_connect(const std::string& path);
bool send_all(int fd, std::string_view bytes);
// Open descriptors and threads of a running process.
size_t fd_count(pid_t pid);
size_t thread_count(pid_t pid);

// Occurrences of `needle` in `text` (not overlapping).
size_t count_of(const std::string& text, const std::string& needle);

// One GetSandbox of an id nobody made, timed in milliseconds.
double get_sandbox_ms(v1::ComputeDriver::Stub& stub);

// `creates` CreateSandbox calls (ids `prefix`0, 1, ...) from channels of
// their own, each connected before all start together; `settle` later, 20
// GetSandbox calls on `stub`. With a stage that suspends the creates: how
// an unrelated call fares beside suspended ones (issue 8's figure).
struct BesideSuspended {
  bool all_connected = false;   // every creator connected within 30 s
  std::vector<double> busy_ms;  // the 20 GetSandbox calls, sorted
  bool gets_first = false;      // all of them answered before the first create
  int ok = 0;                   // creates answered OK
  std::chrono::steady_clock::duration all_creates{};
};
BesideSuspended get_sandbox_beside_creates(const std::string& socket, v1::ComputeDriver::Stub& stub, int creates,
                                           std::chrono::milliseconds settle, const std::string& prefix);

}  // namespace owrap::test
