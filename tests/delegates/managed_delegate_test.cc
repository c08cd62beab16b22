// The managed delegate: clean environment, placeholders, restarts, and no
// orphan when the wrapper is killed.
#include "delegates/delegate_log.h"
#include "tests/support/harness.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

using namespace owrap::test;
using Catch::Contains;

namespace {
bool dead(pid_t pid) {
  return process_dead(pid);
}

// Live (not zombie) processes whose process group is `pgid`.
std::vector<pid_t> live_group_members(pid_t pgid) {
  std::vector<pid_t> out;
  for (const auto& p : all_processes()) {
    if (p.state != 'Z' && p.state != 'X' && p.pgrp == pgid) out.push_back(p.pid);
  }
  return out;
}

// Members of `pgid` other than the leader itself.
std::vector<pid_t> helpers_of(pid_t pgid) {
  auto all = live_group_members(pgid);
  all.erase(std::remove(all.begin(), all.end(), pgid), all.end());
  return all;
}

grpc::Status capabilities(const std::string& socket, std::chrono::seconds deadline = std::chrono::seconds(2)) {
  auto stub = stub_for(socket);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  v1::GetCapabilitiesRequest req;
  v1::GetCapabilitiesResponse resp;
  return stub->GetCapabilities(&ctx, req, &resp);
}

std::vector<nlohmann::json> log_lines(const std::string& log) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

// A runtime directory entry of wrapper `name` under `dir`.
std::vector<std::string> runtime_dirs(const std::string& dir, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string base = e.path().filename().string();
    if (base.rfind("." + name + "-delegate-", 0) == 0) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST_CASE("a killed wrapper leaves no orphaned delegate", "[delegates]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  auto pids = delegate_pids(one.proc->log());
  REQUIRE(pids.size() == 1);
  REQUIRE_FALSE(dead(pids[0]));
  one.proc->signal(SIGKILL);
  one.proc->wait();
  CHECK(wait_for([&] { return dead(pids[0]); }, std::chrono::seconds(5)));
}

TEST_CASE("a killed chain leaves no orphan at any level", "[delegates]") {
  TempDir dir;
  WrapperSpec inner{"inner", "memory", "nested", memory_command()};
  WrapperProc outer(dir, WrapperSpec{"outer", "inner", "nested", wrapper_command(dir, inner)});
  // The inner wrapper's log is forwarded into the outer's, prefixed.
  REQUIRE(wait_for([&] { return outer.proc->log().find("[inner]") != std::string::npos; }));
  std::vector<pid_t> all;
  // The inner wrapper's own lines keep their fields, nested under "inner".
  REQUIRE(wait_for([&] {
    all.clear();
    for (const auto& j : log_lines(outer.proc->log())) {
      if (j["message"] == "delegate started") all.push_back(j["pid"].get<pid_t>());
      if (j["message"] == "[inner] delegate started" && j["delegate"] == "inner" && j["inner"].is_object() &&
          j["inner"]["delegate"] == "memory") {
        all.push_back(j["inner"]["pid"].get<pid_t>());
      }
    }
    return all.size() == 2;
  }));
  outer.proc->signal(SIGKILL);
  outer.proc->wait();
  for (pid_t p : all) CHECK(wait_for([&] { return dead(p); }, std::chrono::seconds(5)));
}

TEST_CASE("the delegate gets a clean socket variable, placeholders and its own env", "[delegates]") {
  TempDir dir;
  std::string env_file = dir.file("child.env"), args_file = dir.file("child.args");
  WrapperSpec spec{"acme",
                   "memory",
                   "nested",
                   {"/bin/sh", "-c",
                    "env > " + env_file + "; echo \\\"$0\\\" \\\"$1\\\" > " + args_file + "; exec " + memory_bin() +
                        " --bind-socket \\\"$0\\\"",
                    "{socket}", "{pid}"}};
  spec.extra_delegate_toml = "env = { DELEGATE_MODE = \"test\", SOCK_COPY = \"{socket}\" }\n";
  std::string socket = dir.file("run/acme.sock");
  write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("ignored.sock")));
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("w.log"),
                  {{"OPENSHELL_COMPUTE_DRIVER_SOCKET", socket}, {"WRAPPER_ONLY", "inherited"}});
  REQUIRE(wait_for_socket(socket));
  std::string env = read_file(env_file);
  CHECK(env.find("OPENSHELL_COMPUTE_DRIVER_SOCKET") == std::string::npos);
  CHECK_THAT(env, Contains("DELEGATE_MODE=test"));
  CHECK_THAT(env, Contains("WRAPPER_ONLY=inherited"));
  std::string args = read_file(args_file);
  CHECK_THAT(args, Contains(".acme-delegate-") && Contains("/memory.sock"));
  CHECK_THAT(args, Contains(std::to_string(wrapper.pid())));
  INFO("args: " << args);
  CHECK_THAT(env, Contains("SOCK_COPY=" + args.substr(0, args.find(' ')) + "\n"));
}

TEST_CASE("inherit_env = false starts the delegate clean", "[delegates]") {
  TempDir dir;
  std::string env_file = dir.file("child.env");
  WrapperSpec spec{
      "acme",
      "memory",
      "nested",
      {"/bin/sh", "-c", "env > " + env_file + "; exec " + memory_bin() + " --bind-socket \\\"$0\\\"", "{socket}"}};
  spec.extra_delegate_toml = "inherit_env = false\nenv = { PATH = \"/usr/bin:/bin\" }\n";
  WrapperProc one(dir, spec);
  std::string env = read_file(env_file);
  CHECK_THAT(env, Contains("PATH=/usr/bin:/bin"));
  CHECK(env.find("HOME=") == std::string::npos);
}

TEST_CASE("an exiting delegate is restarted and logged", "[delegates]") {
  TempDir dir;
  WrapperProc one(dir, WrapperSpec{"acme", "memory", "nested", memory_command()});
  auto first = delegate_pids(one.proc->log());
  REQUIRE(first.size() == 1);
  ::kill(first[0], SIGTERM);
  REQUIRE(wait_for([&] { return delegate_pids(one.proc->log()).size() == 2; }));
  CHECK(wait_for_socket(one.socket));
  CHECK(wait_for([&] {
    return one.proc->log().find("\"delegate ready\"", one.proc->log().find("restarting")) != std::string::npos;
  }));
  CHECK_THAT(one.proc->log(), Contains("\"how\":\"exited with code 0\""));
  one.proc->signal(SIGTERM);
  CHECK(one.proc->wait() == 0);
  for (pid_t p : delegate_pids(one.proc->log())) CHECK(wait_for([&] { return dead(p); }));
}

TEST_CASE("a delegate that never becomes ready stops start-up", "[delegates]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", {"/bin/sleep", "30"}};
  spec.extra_delegate_toml = "";
  std::string toml = wrapper_toml(spec, dir.file("run/acme.sock"));
  toml.replace(toml.find("ready_timeout_ms = 10000"), 24, "ready_timeout_ms = 500");
  write_file(dir.file("w.toml"), toml);
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("w.log"));
  CHECK(wrapper.wait(std::chrono::seconds(10)) == 1);
  CHECK_THAT(wrapper.log(), Contains("did not become ready"));
  // Said as what happened, not as the signal we used to stop it.
  std::string error;
  for (const auto& j : log_lines(wrapper.log()))
    if (j["message"] == "cannot start the delegate") error = j["error"];
  CHECK_THAT(error, Contains("did not answer within ready_timeout_ms (500 ms)"));
  CHECK_THAT(error, !Contains("killed by signal"));
  CHECK_FALSE(std::filesystem::exists(dir.file("run/acme.sock")));
}

TEST_CASE("a driver's background child neither blocks its restart nor outlives it", "[delegates]") {
  TempDir dir;
  // Real drivers start helpers (VM monitors, sh -c wrappers) that inherit
  // the output pipes.
  WrapperSpec spec{"acme",
                   "memory",
                   "nested",
                   {"/bin/sh", "-c", "sleep 301 & exec " + memory_bin() + " --bind-socket \\\"$0\\\"", "{socket}"}};
  WrapperProc one(dir, spec);
  auto first = delegate_pids(one.proc->log());
  REQUIRE(first.size() == 1);
  std::vector<pid_t> first_helpers;
  REQUIRE(wait_for([&] { return (first_helpers = helpers_of(first[0])).size() == 1; }));
  ::kill(first[0], SIGKILL);
  CHECK(wait_for([&] { return delegate_pids(one.proc->log()).size() == 2; }, std::chrono::seconds(5)));
  CHECK(wait_for([&] { return dead(first_helpers[0]); }, std::chrono::seconds(5)));
  CHECK(wait_for([&] { return capabilities(one.socket).ok(); }, std::chrono::seconds(5)));
  auto pids = delegate_pids(one.proc->log());
  REQUIRE(pids.size() == 2);
  std::vector<pid_t> second_helpers;
  REQUIRE(wait_for([&] { return (second_helpers = helpers_of(pids[1])).size() == 1; }));
  one.proc->signal(SIGTERM);
  CHECK(one.proc->wait(std::chrono::seconds(5)) == 0);
  CHECK(wait_for([&] { return dead(pids[1]) && dead(second_helpers[0]); }, std::chrono::seconds(5)));
  CHECK(live_group_members(pids[1]).empty());
}

TEST_CASE("a start-up failure does not wait for the driver's background child", "[delegates]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", {"/bin/sh", "-c", "sleep 302 & sleep 0.2; exit 1"}};
  std::string toml = wrapper_toml(spec, dir.file("run/acme.sock"));
  write_file(dir.file("w.toml"), toml);
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("w.log"));
  auto started = [&] { return delegate_pids(wrapper.log()).size() == 1; };
  REQUIRE(wait_for(started));
  pid_t leader = delegate_pids(wrapper.log())[0];
  CHECK(wrapper.wait(std::chrono::seconds(5)) == 1);
  CHECK_THAT(wrapper.log(), Contains("did not become ready") && Contains("exited with code 1"));
  CHECK(wait_for([&] { return live_group_members(leader).empty(); }, std::chrono::seconds(5)));
  // Whatever happened, leave nothing behind.
  for (pid_t p : live_group_members(leader)) ::kill(p, SIGKILL);
}

TEST_CASE("a failing driver's own words keep their level and fields", "[delegates]") {
  TempDir dir;
  std::string script = dir.file("driver.sh");
  write_file(script,
             "echo '{\"timestamp\":\"2025-01-01T00:00:00Z\",\"level\":\"ERROR\",\"fields\":{\"message\":\"cannot reach "
             "the cluster\",\"attempt\":3},\"target\":\"k8s\"}' >&2\n"
             "echo '{\"level\":\"info\",\"msg\":\"chatty info\"}' >&2\n"
             "echo 'plain words on stderr' >&2\n"
             "echo 'plain words on stdout'\n"
             "exit 2\n");
  WrapperSpec spec{"acme", "kubernetes", "nested", {"/bin/sh", script, "{socket}"}};
  spec.extra_toml = "log_level = \"warn\"\n";
  write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("run/acme.sock")));
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("w.log"));
  REQUIRE(wrapper.wait(std::chrono::seconds(10)) == 1);
  auto lines = log_lines(wrapper.log());
  INFO(wrapper.log());
  auto find = [&](const std::string& message) -> nlohmann::json {
    for (const auto& j : lines)
      if (j["message"] == message) return j;
    return nullptr;
  };
  auto error = find("[kubernetes] cannot reach the cluster");
  REQUIRE(error.is_object());
  CHECK(error["level"] == "error");
  CHECK(error["delegate"] == "kubernetes");
  CHECK(error["kubernetes"]["target"] == "k8s");
  CHECK(error["kubernetes"]["fields"]["attempt"] == 3);
  CHECK(error["kubernetes"]["timestamp"] == "2025-01-01T00:00:00Z");
  auto plain = find("[kubernetes] plain words on stderr");
  REQUIRE(plain.is_object());
  CHECK(plain["level"] == "warn");
  // Below log_level: not written.
  CHECK(find("[kubernetes] chatty info").is_null());
  CHECK(find("[kubernetes] plain words on stdout").is_null());
}

TEST_CASE("a hung delegate is noticed by the liveness probe and restarted", "[delegates]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  spec.extra_delegate_toml = "liveness_interval_ms = 300\nliveness_timeout_ms = 300\nliveness_failures = 2\n";
  WrapperProc one(dir, spec);
  auto first = delegate_pids(one.proc->log());
  REQUIRE(first.size() == 1);
  REQUIRE(capabilities(one.socket).ok());
  ::kill(first[0], SIGSTOP);  // alive, but answers nothing
  CHECK(wait_for([&] { return delegate_pids(one.proc->log()).size() >= 2; }, std::chrono::seconds(10)));
  CHECK_THAT(one.proc->log(), Contains("liveness probe failed") && Contains("\"liveness_failures\":2"));
  CHECK(wait_for([&] { return dead(first[0]); }, std::chrono::seconds(5)));
  CHECK(wait_for([&] { return capabilities(one.socket).ok(); }, std::chrono::seconds(5)));
  one.proc->signal(SIGTERM);
  CHECK(one.proc->wait(std::chrono::seconds(10)) == 0);
  if (!dead(first[0])) ::kill(first[0], SIGKILL);
}

TEST_CASE("stale runtime directories are removed, live ones kept", "[delegates]") {
  TempDir dir;
  std::string runtime = dir.file("rt");
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  spec.extra_delegate_toml = "runtime_dir = \"" + runtime + "\"\n";
  auto launch = [&](const std::string& tag) {
    write_file(dir.file(tag + ".toml"), wrapper_toml(spec, dir.file("run-" + tag + "/acme.sock")));
    auto p = std::make_unique<Process>(
        std::vector<std::string>{wrapper_bin(), "run", "--config", dir.file(tag + ".toml")}, dir.file(tag + ".log"));
    if (!wait_for_socket(dir.file("run-" + tag + "/acme.sock"))) throw std::runtime_error(p->log());
    return p;
  };
  auto killed = launch("one");
  auto stale = runtime_dirs(runtime, "acme");
  REQUIRE(stale.size() == 1);
  killed->signal(SIGKILL);
  killed->wait();
  auto live = launch("two");
  auto both = runtime_dirs(runtime, "acme");
  REQUIRE(both.size() == 1);  // the stale one went when "two" started
  CHECK(both[0] != stale[0]);
  auto third = launch("three");
  auto now = runtime_dirs(runtime, "acme");
  CHECK(now.size() == 2);  // "two"'s directory is in use: kept
  CHECK(std::find(now.begin(), now.end(), both[0]) != now.end());
  CHECK(capabilities(dir.file("run-two/acme.sock")).ok());
  CHECK_THAT(live->log(), !Contains("delegate exited"));
}

TEST_CASE("a shared sticky runtime_dir is used as it is, never chmodded", "[delegates]") {
  TempDir dir;
  std::string shared = dir.file("shared");
  REQUIRE(::mkdir(shared.c_str(), 0755) == 0);
  REQUIRE(::chmod(shared.c_str(), 01777) == 0);
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  spec.extra_delegate_toml = "runtime_dir = \"" + shared + "\"\n";
  WrapperProc one(dir, spec);
  CHECK(capabilities(one.socket).ok());
  struct stat st {};
  REQUIRE(::stat(shared.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 01777);
  auto mine = runtime_dirs(shared, "acme");
  REQUIRE(mine.size() == 1);
  REQUIRE(::stat(mine[0].c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
}

TEST_CASE("delegate log lines: level spellings, message keys, plain text", "[delegates][log]") {
  using owrap::delegate_log_line;
  using owrap::LogLevel;
  using owrap::OutputStream;
  struct Case {
    std::string line;
    LogLevel level;
    std::string message;
  } cases[] = {
      {R"({"level":"TRACE","message":"a"})", LogLevel::kDebug, "[k] a"},
      {R"({"level":"Debug","msg":"b"})", LogLevel::kDebug, "[k] b"},
      {R"({"level":"INFO","fields":{"message":"c"}})", LogLevel::kInfo, "[k] c"},
      {R"({"level":"warning","message":"d"})", LogLevel::kWarn, "[k] d"},
      {R"({"level":"WARN","message":"e"})", LogLevel::kWarn, "[k] e"},
      {R"({"level":"fatal","message":"f"})", LogLevel::kError, "[k] f"},
      {R"({"level":"PANIC","message":"g"})", LogLevel::kError, "[k] g"},
      {R"({"level":"critical","message":"h"})", LogLevel::kError, "[k] h"},
      {R"({"level":50,"msg":"pino error"})", LogLevel::kError, "[k] pino error"},
      {R"({"message":"no level"})", LogLevel::kWarn, "[k] no level"},
      {"plain text", LogLevel::kWarn, "[k] plain text"},
      {"[1, 2]", LogLevel::kWarn, "[k] [1, 2]"},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    auto out = delegate_log_line("k", OutputStream::kStderr, c.line);
    CHECK(out.level == c.level);
    CHECK(out.message == c.message);
    CHECK(out.fields["delegate"] == "k");
    CHECK(out.fields["stream"] == "stderr");
  }
  CHECK(delegate_log_line("k", OutputStream::kStdout, "plain").level == LogLevel::kInfo);
  auto rust = delegate_log_line("k", OutputStream::kStderr,
                                R"({"level":"ERROR","fields":{"message":"m","n":1},"target":"t","span":{"id":2}})");
  CHECK(rust.fields["k"] == nlohmann::json::parse(R"({"fields":{"n":1},"target":"t","span":{"id":2}})"));
  // A delegate named like one of our own keys cannot overwrite it.
  auto odd = delegate_log_line("level", OutputStream::kStderr, R"({"level":"info","message":"x","a":1})");
  CHECK(odd.fields["level_fields"]["a"] == 1);
  CHECK_FALSE(odd.fields.contains("level"));
}

TEST_CASE("a runtime_dir that is a symlink or a foreign non-sticky directory is refused", "[delegates]") {
  TempDir dir;
  std::string real = dir.file("real"), link = dir.file("link"), foreign = dir.file("foreign");
  REQUIRE(::mkdir(real.c_str(), 0700) == 0);
  REQUIRE(::symlink(real.c_str(), link.c_str()) == 0);
  REQUIRE(::mkdir(foreign.c_str(), 0755) == 0);
  std::vector<std::pair<std::string, std::string>> cases = {{link, "is a symlink"}};
  // Only root can give a directory away.
  if (::geteuid() == 0 && ::chown(foreign.c_str(), 65534, static_cast<gid_t>(-1)) == 0) {
    cases.emplace_back(foreign, "is not sticky");
  }
  for (const auto& [runtime, error] : cases) {
    INFO(runtime);
    WrapperSpec spec{"acme", "memory", "nested", memory_command()};
    spec.extra_delegate_toml = "runtime_dir = \"" + runtime + "\"\n";
    write_file(dir.file("w.toml"), wrapper_toml(spec, dir.file("run/acme.sock")));
    Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("w.log"));
    CHECK(wrapper.wait(std::chrono::seconds(10)) == 1);
    CHECK_THAT(wrapper.log(), Contains(error));
    ::unlink(dir.file("w.log").c_str());
  }
  struct stat st {};
  REQUIRE(::stat(foreign.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
}

namespace {
// Pids a test's shell appended to `file`, one a line.
std::vector<pid_t> pids_in(const std::string& file) {
  std::vector<pid_t> out;
  std::istringstream lines(read_file(file));
  for (pid_t p; lines >> p;) out.push_back(p);
  return out;
}

// Kills a process this test started, by pid, after checking it is still
// that program (the pid may have been reused).
void kill_if_running(pid_t pid, const std::string& program) {
  if (pid <= 0 || dead(pid)) return;
  std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
  std::string argv0;
  std::getline(cmdline, argv0, '\0');
  if (argv0 == program || argv0.size() > program.size() &&
                              argv0.compare(argv0.size() - program.size() - 1, std::string::npos, "/" + program) == 0) {
    ::kill(pid, SIGKILL);
  }
}

std::string with_stop_grace(std::string toml, int ms) {
  auto at = toml.find("stop_grace_ms = 3000");
  return toml.replace(at, 20, "stop_grace_ms = " + std::to_string(ms));
}
}  // namespace

TEST_CASE("a helper that left the group and floods stderr neither blocks a restart nor the exit", "[delegates]") {
  TempDir dir;
  std::string floods = dir.file("flood.pids"), drivers = dir.file("driver.pids");
  auto memory = memory_command();
  WrapperSpec spec{"acme",
                   "memory",
                   "nested",
                   {"/bin/sh", "-c",
                    "setsid yes floodfloodflood >&2 & echo $! >> " + floods + "; echo $$ >> " + drivers + "; exec " +
                        memory[0] + " " + memory[1] + " \\\"$0\\\"",
                    "{socket}"}};
  std::string socket = dir.file("run/acme.sock");
  write_file(dir.file("w.toml"), with_stop_grace(wrapper_toml(spec, socket), 1000));
  // The wrapper logs the flood line by line: to a file, that is hundreds of
  // MB in seconds.
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, "/dev/null");
  REQUIRE(wait_for_socket(socket, std::chrono::seconds(15)));
  REQUIRE(wait_for([&] { return pids_in(drivers).size() == 1 && pids_in(floods).size() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ::kill(pids_in(drivers)[0], SIGKILL);
  CHECK(wait_for([&] { return pids_in(drivers).size() == 2; }, std::chrono::seconds(8)));
  CHECK(wait_for([&] { return capabilities(socket).ok(); }, std::chrono::seconds(5)));
  wrapper.signal(SIGTERM);
  CHECK(wrapper.wait(std::chrono::seconds(8)) == 0);
  for (pid_t p : pids_in(floods)) kill_if_running(p, "yes");
  for (pid_t p : pids_in(floods)) CHECK(wait_for([&] { return dead(p); }, std::chrono::seconds(5)));
}

TEST_CASE("stopping signals the delegate once", "[delegates]") {
  TempDir dir;
  // Several rounds: two signals sent back to back often arrive as one.
  for (int round = 0; round < 3; round++) {
    WrapperProc one(dir, WrapperSpec{"acme" + std::to_string(round), "memory", "nested", memory_command()});
    one.proc->signal(SIGTERM);
    REQUIRE(one.proc->wait(std::chrono::seconds(10)) == 0);
    std::string log = one.proc->log();
    INFO(log);
    REQUIRE_THAT(log, Contains("[memory] memory driver: termination signal received"));
    CHECK_THAT(log, !Contains("termination signal received again"));
  }
}

TEST_CASE("why a delegate is unavailable reads as a sentence", "[delegates]") {
  TempDir dir;
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  // A backoff no loaded machine outlasts, and a deadline to match: the call
  // must land while the delegate waits to restart (2 s was once too short).
  spec.extra_delegate_toml = "restart_backoff_initial_ms = 60000\n";
  WrapperProc one(dir, spec);
  auto first = delegate_pids(one.proc->log());
  REQUIRE(first.size() == 1);
  ::kill(first[0], SIGKILL);
  REQUIRE(wait_for([&] { return one.proc->log().find("restarting delegate") != std::string::npos; }));
  grpc::Status s = capabilities(one.socket, std::chrono::seconds(20));
  INFO(s.error_message());
  CHECK(s.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK_THAT(s.error_message(), Contains("restarting after it was killed by signal Killed (9)"));
}

TEST_CASE("a delegate that ignores SIGTERM is killed after its grace and the log says so", "[delegates]") {
  TempDir dir;
  std::string drivers = dir.file("driver.pids");
  // A shell leader that ignores SIGTERM, with the driver as its child.
  WrapperSpec spec{"acme",
                   "memory",
                   "nested",
                   {"/bin/sh", "-c",
                    "trap '' TERM; echo $$ >> " + drivers + "; " + memory_bin() + " --bind-socket \\\"$0\\\"; sleep 30",
                    "{socket}"}};
  std::string socket = dir.file("run/acme.sock");
  write_file(dir.file("w.toml"), with_stop_grace(wrapper_toml(spec, socket), 1000));
  Process wrapper({wrapper_bin(), "run", "--config", dir.file("w.toml")}, dir.file("w.log"));
  REQUIRE(wait_for_socket(socket, std::chrono::seconds(15)));
  wrapper.signal(SIGTERM);
  CHECK(wrapper.wait(std::chrono::seconds(10)) == 0);
  nlohmann::json killed, exited;
  for (const auto& j : log_lines(wrapper.log())) {
    if (j["message"] == "delegate did not stop within its grace; killed it") killed = j;
    if (j["message"] == "delegate exited") exited = j;
  }
  INFO(wrapper.log());
  REQUIRE(killed.is_object());
  CHECK(killed["how"] == "was killed by signal Killed (9)");
  REQUIRE(exited.is_object());
  CHECK(exited["signal"] == SIGKILL);
  for (pid_t p : pids_in(drivers)) CHECK(wait_for([&] { return dead(p); }, std::chrono::seconds(5)));
}

TEST_CASE("missing runtime_dir components are created private", "[delegates]") {
  TempDir dir;
  std::string runtime = dir.file("a/b/rt");
  WrapperSpec spec{"acme", "memory", "nested", memory_command()};
  spec.extra_delegate_toml = "runtime_dir = \"" + runtime + "\"\n";
  mode_t old = ::umask(022);
  WrapperProc one(dir, spec);
  ::umask(old);
  for (const std::string& p : {dir.file("a"), dir.file("a/b"), runtime}) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    INFO(p);
    CHECK((st.st_mode & 07777) == 0700);
  }
}
