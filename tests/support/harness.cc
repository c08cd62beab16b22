#include "tests/support/harness.h"

#include <mutex>

#include <condition_variable>

#include <grpcpp/generic/generic_stub.h>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace owrap::test {

std::string wrapper_bin() {
  return OWRAP_WRAPPER_BIN;
}
std::string memory_bin() {
  return OWRAP_MEMORY_BIN;
}

TempDir::TempDir() {
  std::string tmpl = "/tmp/owrap-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  // OWRAP_KEEP_TEST_DIRS=1 keeps logs and sockets for a post-mortem.
  if (std::getenv("OWRAP_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

namespace {
void drop_privileges(const std::string& user) {
  passwd* pw = ::getpwnam(user.c_str());
  if (pw == nullptr) ::_exit(126);
  if (::setgroups(0, nullptr) != 0 || ::setgid(pw->pw_gid) != 0 || ::setuid(pw->pw_uid) != 0) ::_exit(126);
}
}  // namespace

Process::Process(std::vector<std::string> argv, std::string log_file, std::map<std::string, std::string> env,
                 std::string run_as_user)
    : log_file_(std::move(log_file)) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; e++) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    if (!env.count(key)) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : env)
    if (!v.empty()) env_strings.push_back(k + "=" + v);
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : env_strings) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  int fd = ::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (!run_as_user.empty()) drop_privileges(run_as_user);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  ::close(fd);
}

Process::~Process() {
  if (!reaped_) {
    signal(SIGTERM);
    if (wait(std::chrono::seconds(5)) == -1) {
      signal(SIGKILL);
      wait(std::chrono::seconds(5));
    }
  }
}

void Process::signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

bool Process::running() {
  if (reaped_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
    return false;
  }
  return true;
}

int Process::wait(std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  return 128 + WTERMSIG(status_);
}

std::string Process::log() const {
  return read_file(log_file_);
}

bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

bool wait_for_socket(const std::string& path, std::chrono::milliseconds timeout) {
  return wait_for(
      [&] {
        auto stub = stub_for(path);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
        v1::GetCapabilitiesResponse r;
        return stub->GetCapabilities(&ctx, {}, &r).ok();
      },
      timeout);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::string write_executable(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = dir.file(name);
  write_file(path, text);
  ::chmod(path.c_str(), 0755);
  return path;
}

std::unique_ptr<v1::ComputeDriver::Stub> stub_for(const std::string& socket) {
  return v1::ComputeDriver::NewStub(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

MemoryDriverProc::MemoryDriverProc(const TempDir& dir, const std::string& name, std::vector<std::string> extra)
    : socket(dir.file(name + ".sock")), record(dir.file(name + ".record.jsonl")) {
  std::vector<std::string> argv = {memory_bin(), "--bind-socket", socket, "--record", record};
  argv.insert(argv.end(), extra.begin(), extra.end());
  proc = std::make_unique<Process>(argv, dir.file(name + ".log"));
  if (!wait_for_socket(socket)) throw std::runtime_error("memory driver " + name + " did not come up: " + proc->log());
}

std::vector<std::string> wrapper_command(const TempDir& dir, const WrapperSpec& inner) {
  std::string config = dir.file(inner.name + ".toml");
  // The socket in the file is never used: --bind-socket overrides it.
  write_file(config, wrapper_toml(inner, dir.file("unused-" + inner.name + ".sock")));
  return {wrapper_bin(), "run", "--config", config, "--bind-socket", "{socket}"};
}

std::vector<std::string> memory_command(const std::string& record_file, std::vector<std::string> extra) {
  std::vector<std::string> argv = {memory_bin(), "--bind-socket", "{socket}"};
  if (!record_file.empty()) {
    argv.push_back("--record");
    argv.push_back(record_file);
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

std::string wrapper_toml(const WrapperSpec& spec, const std::string& socket) {
  std::ostringstream t;
  t << "[wrapper]\nname = \"" << spec.name << "\"\nsocket = \"" << socket << "\"\nconfig_mode = \"" << spec.config_mode
    << "\"\n"
    << spec.extra_toml << "\n[delegate]\nname = \"" << spec.delegate_name
    << "\"\nready_timeout_ms = " << spec.ready_timeout_ms << "\n"
    << "stop_grace_ms = 3000\n";
  // Tests restart quickly unless they say otherwise.
  if (spec.extra_delegate_toml.find("restart_backoff_initial_ms") == std::string::npos) {
    t << "restart_backoff_initial_ms = 100\n";
  }
  if (!spec.endpoint_socket.empty()) {
    t << "endpoint = \"unix://" << spec.endpoint_socket << "\"\n";
  } else {
    t << "command = [";
    for (size_t i = 0; i < spec.command.size(); i++) t << (i ? ", " : "") << "\"" << spec.command[i] << "\"";
    t << "]\n";
  }
  t << spec.extra_delegate_toml << "\n";
  return t.str();
}

WrapperProc::WrapperProc(const TempDir& dir, const WrapperSpec& spec)
    : socket(dir.file("run-" + spec.name + "/" + spec.name + ".sock")), config(dir.file(spec.name + ".toml")) {
  write_file(config, wrapper_toml(spec, socket));
  proc = std::make_unique<Process>(
      std::vector<std::string>{spec.binary.empty() ? wrapper_bin() : spec.binary, "run", "--config", config},
      dir.file(spec.name + ".log"));
  if (!wait_for_socket(socket, std::chrono::seconds(15))) {
    throw std::runtime_error("wrapper " + spec.name + " did not come up: " + proc->log());
  }
}

int run_command(const std::vector<std::string>& argv, std::string* out, std::string* err, const std::string& stdin_text,
                const std::string& run_as_user) {
  TempDir dir;
  std::string in_file = dir.file("stdin"), out_file = dir.file("stdout"), err_file = dir.file("stderr");
  write_file(in_file, stdin_text);
  if (!run_as_user.empty()) ::chmod(dir.path().c_str(), 0777);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    int i = ::open(in_file.c_str(), O_RDONLY);
    int o = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    int e = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    ::dup2(i, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    if (!run_as_user.empty()) drop_privileges(run_as_user);
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (out) *out = read_file(out_file);
  if (err) *err = read_file(err_file);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool file_contains(const std::string& path, const std::string& needle) {
  return read_file(path).find(needle) != std::string::npos;
}

std::vector<pid_t> delegate_pids(const std::string& wrapper_log) {
  std::vector<pid_t> pids;
  std::istringstream lines(wrapper_log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"delegate started\"") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    // Only this wrapper's own lines: a chained delegate's are "[name] delegate started".
    if (!j.is_discarded() && j["message"] == "delegate started" && j.contains("pid")) {
      pids.push_back(j["pid"].get<pid_t>());
    }
  }
  return pids;
}

v1::DriverSandbox make_sandbox(const std::string& id, const std::string& driver_config_json) {
  v1::DriverSandbox sb;
  sb.set_id(id);
  sb.set_name("name-" + id);
  sb.set_namespace_("default");
  auto* tmpl = sb.mutable_spec()->mutable_template_();
  tmpl->set_image("ghcr.io/example/sandbox:1");
  (*tmpl->mutable_labels())["team"] = "blue";
  (*sb.mutable_spec()->mutable_environment())["A"] = "1";
  if (!driver_config_json.empty()) {
    auto st = google::protobuf::util::JsonStringToMessage(driver_config_json, tmpl->mutable_driver_config());
    if (!st.ok()) throw std::runtime_error("bad driver_config json in test: " + driver_config_json);
  }
  return sb;
}

grpc::Status generic_unary(const std::string& socket, const std::string& method, const std::string& bytes) {
  grpc::GenericStub generic(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer req(&slice, 1), resp;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status result;
  generic.UnaryCall(&ctx, method, {}, &req, &resp, [&](grpc::Status s) {
    std::lock_guard<std::mutex> l(mu);
    result = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });  // the deadline ends it
  return result;
}

std::string system_python3() {
  return ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

bool python_grpc_available() {
  std::string out, err;
  return run_command({system_python3(), "-c", "import grpc, google.protobuf"}, &out, &err) == 0;
}

std::optional<ProcStat> proc_stat(pid_t pid) {
  int fd = ::open(("/proc/" + std::to_string(pid) + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  std::string text(buf, static_cast<size_t>(n));
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return std::nullopt;
  std::istringstream fields(text.substr(close + 2));
  ProcStat s;
  s.pid = pid;
  long skip = 0;
  fields >> s.state >> s.ppid >> s.pgrp;
  for (int field = 6; field <= 13; field++) fields >> skip;  // session .. cmajflt
  fields >> s.utime_ticks >> s.stime_ticks;
  if (!fields) return std::nullopt;
  return s;
}

std::vector<ProcStat> all_processes() {
  std::vector<ProcStat> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (auto s = proc_stat(static_cast<pid_t>(std::stol(name)))) out.push_back(*s);
  }
  return out;
}

bool process_dead(pid_t pid) {
  auto s = proc_stat(pid);
  return !s || s->state == 'Z' || s->state == 'X';
}

bool group_alive(pid_t pgid) {
  for (const auto& p : all_processes()) {
    if (p.pgrp == pgid && p.state != 'Z' && p.state != 'X') return true;
  }
  return false;
}

bool blocks_signal(pid_t pid, int sig) {
  // getline on a stream never throws here (no exceptions() set): a process
  // that vanishes mid-read reads as not blocking.
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("SigBlk:", 0) != 0) continue;
    unsigned long long mask = std::strtoull(line.c_str() + 7, nullptr, 16);
    return (mask >> (sig - 1)) & 1ULL;
  }
  return false;
}

int raw_connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (fd < 0 || path.size() >= sizeof addr.sun_path) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

namespace {
size_t count_dir(const std::string& path) {
  std::error_code ec;
  size_t n = 0;
  for (std::filesystem::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) n++;
  return n;
}
}  // namespace

size_t fd_count(pid_t pid) {
  return count_dir("/proc/" + std::to_string(pid) + "/fd");
}

size_t thread_count(pid_t pid) {
  return count_dir("/proc/" + std::to_string(pid) + "/task");
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find(needle, p)) != std::string::npos; p += needle.size()) n++;
  return n;
}

double get_sandbox_ms(v1::ComputeDriver::Stub& stub) {
  grpc::ClientContext ctx;
  v1::GetSandboxRequest req;
  req.set_sandbox_id("warm");
  v1::GetSandboxResponse resp;
  auto start = std::chrono::steady_clock::now();
  (void)stub.GetSandbox(&ctx, req, &resp);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

BesideSuspended get_sandbox_beside_creates(const std::string& socket, v1::ComputeDriver::Stub& stub, int creates,
                                           std::chrono::milliseconds settle, const std::string& prefix) {
  using Clock = std::chrono::steady_clock;
  std::atomic<int> ok{0}, ready{0};
  std::atomic<bool> go{false};
  std::atomic<int64_t> first_answer_us{INT64_MAX};
  Clock::time_point started;
  std::vector<std::thread> creators;
  for (int i = 0; i < creates; i++) {
    creators.emplace_back([&, i] {
      // Connected before the clock starts: only the creates themselves are
      // in flight while the GetSandbox calls are measured.
      auto own = stub_for(socket);
      (void)get_sandbox_ms(*own);
      ready++;
      while (!go.load()) std::this_thread::sleep_for(std::chrono::microseconds(200));
      grpc::ClientContext ctx;
      v1::CreateSandboxRequest req;
      *req.mutable_sandbox() = make_sandbox(prefix + std::to_string(i));
      v1::CreateSandboxResponse resp;
      if (own->CreateSandbox(&ctx, req, &resp).ok()) ok++;
      int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
      for (int64_t prev = first_answer_us.load(); us < prev && !first_answer_us.compare_exchange_weak(prev, us);) {
      }
    });
  }
  BesideSuspended out;
  out.all_connected = wait_for([&] { return ready == creates; }, std::chrono::seconds(30));
  started = Clock::now();
  go = true;
  std::this_thread::sleep_for(settle);
  for (int i = 0; i < 20; i++) out.busy_ms.push_back(get_sandbox_ms(stub));
  const int64_t gets_done_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
  for (auto& t : creators) t.join();
  out.all_creates = Clock::now() - started;
  out.gets_first = gets_done_us < first_answer_us.load();
  out.ok = ok.load();
  std::sort(out.busy_ms.begin(), out.busy_ms.end());
  return out;
}

}  // namespace owrap::test
