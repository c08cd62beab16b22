// The exec transport with real processes: a Python example hook, shell
// scripts that misbehave, and /proc to see what is left of them.
#include "hooks/exec_hook.h"

#include "common/log.h"
#include "support/harness.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

using namespace owrap;
using namespace owrap::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// The wrapper's one io thread.
struct IoThread {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{io.get_executor()};
  std::thread thread{[this] { io.run(); }};
  ~IoThread() {
    guard.reset();
    io.stop();
    thread.join();
  }
};

HookSpec exec_spec(const std::string& name, std::vector<std::string> command,
                   std::map<std::string, std::string> env = {}) {
  HookSpec spec;
  spec.name = name;
  spec.transport = HookTransport::kExec;
  spec.command = std::move(command);
  spec.env = std::move(env);
  return spec;
}

// An executable /bin/sh script in `dir`.
std::string script(const TempDir& dir, const std::string& name, const std::string& body) {
  return write_executable(dir, name, "#!/bin/sh\n" + body);
}

std::shared_ptr<hookpb::HookRequest> request(const std::string& phase, const std::string& image = "busybox:1.36") {
  auto r = std::make_shared<hookpb::HookRequest>();
  r->set_protocol_version(kHookProtocolVersion);
  r->set_hook("test");
  r->set_phase(phase);
  r->set_rpc("CreateSandbox");
  r->set_sandbox_id("sb-1");
  r->set_deadline_ms(5000);
  auto* tmpl = r->mutable_sandbox()->mutable_spec()->mutable_template_();
  tmpl->set_image(image);
  tmpl->set_agent_socket_path("/run/agent.sock");
  (*tmpl->mutable_labels())["tenant"] = "acme";
  r->mutable_sandbox()->set_id("sb-1");
  return r;
}

struct Call {
  std::future<HookOutcome> outcome;
  std::shared_ptr<CancelSignal> cancel = std::make_shared<CancelSignal>();
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<bool>> on_io_thread = std::make_shared<std::atomic<bool>>(false);
};

Call start(ExecHook& hook, IoThread& io, std::shared_ptr<hookpb::HookRequest> req,
           std::chrono::milliseconds timeout = 20s) {
  Call call;
  auto promise = std::make_shared<std::promise<HookOutcome>>();
  call.outcome = promise->get_future();
  InvokeOptions options;
  options.deadline = Clock::now() + timeout;
  options.cancel = call.cancel;
  hook.invoke(std::move(req), options,
              [promise, calls = call.calls, on_io = call.on_io_thread, io_id = io.thread.get_id()](HookOutcome o) {
                on_io->store(std::this_thread::get_id() == io_id);
                if (calls->fetch_add(1) == 0) promise->set_value(std::move(o));
              });
  return call;
}

HookOutcome wait(Call& call, std::chrono::seconds limit = 30s) {
  REQUIRE(call.outcome.wait_for(limit) == std::future_status::ready);
  auto outcome = call.outcome.get();
  CHECK(call.on_io_thread->load());
  return outcome;
}

bool dead(pid_t pid) {
  return process_dead(pid);
}

// Children of this test process that are zombies: nobody reaped them.
std::vector<pid_t> zombie_children() {
  std::vector<pid_t> zombies;
  for (const auto& p : all_processes()) {
    if (p.ppid == ::getpid() && p.state == 'Z') zombies.push_back(p.pid);
  }
  return zombies;
}

std::vector<pid_t> read_pids(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<pid_t> pids;
  for (pid_t p; in >> p;) pids.push_back(p);
  return pids;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// A process group leader and its background child, both sleeping; their
// pids land in $PIDS.$$ once both run.
const char* kSleepingGroup =
    "sleep 60 &\n"
    "echo \"$$ $!\" > \"$PIDS.tmp.$$\"\n"
    "mv \"$PIDS.tmp.$$\" \"$PIDS.$$\"\n"
    "sleep 60\n";

std::vector<std::string> pid_files(const TempDir& dir) {
  std::vector<std::string> files;
  DIR* d = ::opendir(dir.path().c_str());
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("pids.", 0) == 0 && name.find("tmp") == std::string::npos) files.push_back(dir.file(name));
  }
  ::closedir(d);
  return files;
}

// Sends fd 2 (the log) to a file for a while.
class StderrCapture {
 public:
  explicit StderrCapture(std::string path) : path_(std::move(path)) {
    Logger::instance().flush();
    saved_ = ::dup(2);
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  std::string text() {
    restore();
    return read_file(path_);
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    Logger::instance().flush();
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string path_;
  int saved_ = -1;
};

std::string example_hook() {
  return std::string(OWRAP_SOURCE_DIR) + "/examples/hooks/exec/stamp_hook.py";
}

}  // namespace

TEST_CASE("the Python example stamps the plan on prepare and denies :latest on validate", "[exec]") {
  TempDir dir;
  IoThread io;
  std::string record = dir.file("requests.jsonl");
  ExecHook hook(exec_spec("stamp", {example_hook()}, {{"EXAMPLE_HOOK_RECORD", record}}), io.io);
  CHECK(hook.transport() == "exec");

  auto prepare = start(hook, io, request("prepare"));
  auto answer = wait(prepare);
  INFO(answer.failure.error_message());
  REQUIRE(answer.failure.ok());
  CHECK(answer.response.allowed());
  REQUIRE(answer.response.patches_size() == 2);
  const auto& label = answer.response.patches(0);
  CHECK(label.op() == "add");
  CHECK(label.path() == "/spec/template/labels/example.com~1stamped-by");
  CHECK(label.value().string_value() == "exec-example");
  const auto& env = answer.response.patches(1);
  CHECK(env.path() == "/spec/template/environment");
  CHECK(env.value().struct_value().fields().at("EXAMPLE_STAMP").string_value() == "1");

  auto latest = start(hook, io, request("validate", "busybox:latest"));
  auto denied = wait(latest);
  REQUIRE(denied.failure.ok());
  CHECK_FALSE(denied.response.allowed());
  CHECK(denied.response.reason() == "image tag :latest is not allowed");
  CHECK(denied.response.status_code() == "FAILED_PRECONDITION");

  auto pinned = start(hook, io, request("validate", "busybox:1.36"));
  auto allowed = wait(pinned);
  REQUIRE(allowed.failure.ok());
  CHECK(allowed.response.allowed());

  auto after = start(hook, io, request("after_create"));
  CHECK(wait(after).response.allowed());

  // What the hook read on stdin: protobuf JSON with proto field names, one
  // line per invocation.
  auto lines = lines_of(record);
  REQUIRE(lines.size() == 4);
  auto first = nlohmann::json::parse(lines[0]);
  CHECK(first["phase"] == "prepare");
  CHECK(first["sandbox_id"] == "sb-1");
  CHECK(first["protocol_version"] == 1);
  CHECK(first["sandbox"]["spec"]["template"]["agent_socket_path"] == "/run/agent.sock");
  CHECK(first["sandbox"]["spec"]["template"]["labels"]["tenant"] == "acme");
  CHECK(lines[0].find("sandboxId") == std::string::npos);
  CHECK(lines[0].find("agentSocketPath") == std::string::npos);
}

TEST_CASE("an exec hook's environment is PATH, HOME, LANG, TRACEPARENT and its configured env only", "[exec]") {
  TempDir dir;
  ::setenv("OWRAP_TEST_SECRET", "hunter2", 1);
  ::setenv("LANG", "C.UTF-8", 1);
  ::setenv("HOME", "/root-for-test", 1);
  IoThread io;
  std::string dump = dir.file("env");
  // The environment the process was started with, not what the shell adds.
  auto path = script(dir, "env.sh", "tr '\\0' '\\n' < /proc/$$/environ > \"$HOOK_OUT\"\necho '{\"allowed\":true}'\n");
  ExecHook hook(exec_spec("envdump", {path}, {{"HOOK_OUT", dump}, {"CONFIGURED", "yes"}}), io.io);

  auto req = request("validate");
  req->set_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  auto call = start(hook, io, req);
  REQUIRE(wait(call).failure.ok());
  ::unsetenv("OWRAP_TEST_SECRET");

  std::map<std::string, std::string> env;
  for (const auto& line : lines_of(dump)) {
    auto eq = line.find('=');
    env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  std::set<std::string> names;
  for (const auto& [k, v] : env) names.insert(k);
  CHECK(names == std::set<std::string>{"CONFIGURED", "HOME", "HOOK_OUT", "LANG", "PATH", "TRACEPARENT"});
  CHECK(env["TRACEPARENT"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  CHECK(env["LANG"] == "C.UTF-8");
  CHECK(env["HOME"] == "/root-for-test");
  CHECK(env["PATH"] == std::getenv("PATH"));
  CHECK(env["CONFIGURED"] == "yes");
  CHECK(read_file(dump).find("hunter2") == std::string::npos);

  // No traceparent in the call: none in the environment.
  auto plain = start(hook, io, request("validate"));
  REQUIRE(wait(plain).failure.ok());
  CHECK(read_file(dump).find("TRACEPARENT") == std::string::npos);
}

TEST_CASE("a timeout kills the hook's whole process group", "[exec]") {
  TempDir dir;
  IoThread io;
  ExecHook hook(exec_spec("slow", {script(dir, "slow.sh", kSleepingGroup)}, {{"PIDS", dir.file("pids")}}), io.io);
  auto started = Clock::now();
  auto call = start(hook, io, request("validate"), 1500ms);
  REQUIRE(wait_for([&] { return pid_files(dir).size() == 1; }));
  auto pids = read_pids(pid_files(dir)[0]);
  REQUIRE(pids.size() == 2);
  CHECK_FALSE(dead(pids[0]));
  CHECK_FALSE(dead(pids[1]));

  auto outcome = wait(call);
  CHECK(Clock::now() - started < 10s);
  CHECK(outcome.failure.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(outcome.failure.error_message(), Catch::Matches("did not answer within 1[45][0-9][0-9] ms"));
  CHECK(wait_for([&] { return dead(pids[0]) && dead(pids[1]); }, 3s));
  CHECK(wait_for([] { return zombie_children().empty(); }, 3s));
}

TEST_CASE("a cancelled caller: the hook's process group is gone within a second", "[exec]") {
  TempDir dir;
  IoThread io;
  ExecHook hook(exec_spec("slow", {script(dir, "slow.sh", kSleepingGroup)}, {{"PIDS", dir.file("pids")}}), io.io);
  auto call = start(hook, io, request("validate"), 30s);
  REQUIRE(wait_for([&] { return pid_files(dir).size() == 1; }));
  auto pids = read_pids(pid_files(dir)[0]);
  REQUIRE(pids.size() == 2);

  auto cancelled = Clock::now();
  call.cancel->cancel();
  while (!(dead(pids[0]) && dead(pids[1])) && Clock::now() - cancelled < 2s) std::this_thread::sleep_for(1ms);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - cancelled);
  INFO("killed after " << took.count() << " ms");
  // SIGKILLed at the cancel, against a 60 s sleep and a 30 s budget; 100 ms
  // was a scheduling hiccup away from failing on a loaded 2-core box.
  CHECK(took < 1000ms);

  auto outcome = wait(call, 5s);
  CHECK(outcome.failure.error_code() == grpc::StatusCode::CANCELLED);
  CHECK(*call.calls == 1);
  CHECK(wait_for([] { return zombie_children().empty(); }, 3s));
}

TEST_CASE("a crash is INTERNAL with the exit code and the last stderr line, which is logged under the hook's name",
          "[exec]") {
  TempDir dir;
  IoThread io;
  std::string long_line(10000, 'y');
  auto path = script(dir, "crash.sh",
                     "echo 'warming up' >&2\necho '" + long_line + "' >&2\necho 'boom: disk on fire' >&2\nexit 3\n");
  ExecHook hook(exec_spec("crashy", {path}), io.io);
  StderrCapture log(dir.file("log"));
  auto call = start(hook, io, request("validate"));
  auto outcome = wait(call);
  std::string text = log.text();
  CHECK(outcome.failure.error_code() == grpc::StatusCode::INTERNAL);
  CHECK(outcome.failure.error_message() == "exited with code 3: boom: disk on fire");

  // Each line is one log line at warn, tagged with the hook; long lines capped.
  bool saw_boom = false, saw_long = false;
  for (const auto& line : lines_of(dir.file("log"))) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("hook", "") != "crashy") continue;
    CHECK(j["level"] == "warn");
    std::string message = j["message"];
    if (message == "[crashy] boom: disk on fire") saw_boom = true;
    if (message.find("yyyy") != std::string::npos) {
      saw_long = true;
      CHECK(message.size() < 4096 + 64);
      CHECK_THAT(message, Catch::Contains("(truncated)"));
    }
  }
  INFO(text);
  CHECK(saw_boom);
  CHECK(saw_long);
}

TEST_CASE("a hook killed by a signal, printing garbage, nothing, or unknown fields", "[exec]") {
  TempDir dir;
  IoThread io;
  SECTION("killed by a signal") {
    ExecHook hook(exec_spec("k", {script(dir, "k.sh", "kill -9 $$\n")}), io.io);
    auto call = start(hook, io, request("validate"));
    auto outcome = wait(call);
    CHECK(outcome.failure.error_code() == grpc::StatusCode::INTERNAL);
    CHECK_THAT(outcome.failure.error_message(), Catch::StartsWith("was killed by signal"));
  }
  SECTION("garbage") {
    ExecHook hook(exec_spec("g", {script(dir, "g.sh", "echo 'not json SECRET-1'\n")}), io.io);
    auto call = start(hook, io, request("validate"));
    auto outcome = wait(call);
    CHECK(outcome.failure.error_code() == grpc::StatusCode::INTERNAL);
    CHECK(outcome.failure.error_message() == "printed a reply that is not a HookResponse: Unexpected token.");
  }
  SECTION("a field of the wrong type") {
    // The parser's message names the field, but never quotes the reply.
    ExecHook hook(exec_spec("t", {script(dir, "t.sh", "echo '{\"allowed\": \"SECRET-2\"}'\n")}), io.io);
    auto call = start(hook, io, request("validate"));
    auto outcome = wait(call);
    CHECK(outcome.failure.error_message() ==
          "printed a reply that is not a HookResponse: (allowed): invalid value for type TYPE_BOOL");
  }
  SECTION("nothing") {
    ExecHook hook(exec_spec("n", {script(dir, "n.sh", "exit 0\n")}), io.io);
    auto call = start(hook, io, request("validate"));
    auto outcome = wait(call);
    CHECK(outcome.failure.error_code() == grpc::StatusCode::INTERNAL);
    CHECK(outcome.failure.error_message() == "printed nothing");
  }
  SECTION("fields this wrapper does not know are ignored") {
    auto path = script(dir, "u.sh",
                       "cat > /dev/null\n"
                       "echo '{\"allowed\": false, \"reason\": \"no\", \"from_the_future\": {\"x\": 1}}'\n");
    ExecHook hook(exec_spec("u", {path}), io.io);
    auto call = start(hook, io, request("validate"));
    auto outcome = wait(call);
    REQUIRE(outcome.failure.ok());
    CHECK_FALSE(outcome.response.allowed());
    CHECK(outcome.response.reason() == "no");
  }
  SECTION("a hook that never reads its stdin") {
    // The request is bigger than a pipe buffer, and the hook exits first.
    auto req = request("validate");
    (*req->mutable_sandbox()->mutable_spec()->mutable_environment())["BIG"] = std::string(1 << 20, 'b');
    ExecHook hook(exec_spec("r", {script(dir, "r.sh", "echo '{\"allowed\": true}'\n")}), io.io);
    auto call = start(hook, io, req);
    auto outcome = wait(call);
    REQUIRE(outcome.failure.ok());
    CHECK(outcome.response.allowed());
  }
  CHECK(wait_for([] { return zombie_children().empty(); }, 3s));
}

TEST_CASE("a hook that cannot be started is UNAVAILABLE", "[exec]") {
  TempDir dir;
  IoThread io;
  std::string not_executable = dir.file("plain.txt");
  write_file(not_executable, "#!/bin/sh\necho hi\n");
  std::string bad_interpreter = script(dir, "bad.sh", "");
  write_file(bad_interpreter, "#!/nonexistent/interpreter\n");
  std::string directory = dir.file("a-directory");  // passes access(X_OK); execve says EACCES
  ::mkdir(directory.c_str(), 0755);
  for (const auto& command : {dir.file("missing"), not_executable, bad_interpreter, directory}) {
    ExecHook hook(exec_spec("gone", {command}), io.io);
    auto call = start(hook, io, request("validate"));
    auto outcome = wait(call);
    INFO(command);
    CHECK(outcome.failure.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK_THAT(outcome.failure.error_message(), Catch::StartsWith("could not start: "));
    CHECK_THAT(outcome.failure.error_message(), Catch::Contains("\"" + command + "\""));
  }
  CHECK(wait_for([] { return zombie_children().empty(); }, 3s));
}

TEST_CASE("2 MiB on stdout: the hook is killed and fails naming the cap", "[exec]") {
  TempDir dir;
  IoThread io;
  auto path = script(dir, "flood.sh", "head -c 2097152 /dev/zero | tr '\\0' x\nsleep 60\n");
  ExecHook hook(exec_spec("flood", {path}), io.io);
  auto started = Clock::now();
  auto call = start(hook, io, request("validate"), 30s);
  auto outcome = wait(call);
  CHECK(Clock::now() - started < 10s);
  CHECK(outcome.failure.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(outcome.failure.error_message() == "printed more than 1048576 bytes on stdout");

  // A smaller configured cap.
  auto spec = exec_spec("small", {script(dir, "small.sh", "head -c 5000 /dev/zero | tr '\\0' ' '\n")});
  spec.max_reply_bytes = 4096;
  ExecHook small(spec, io.io);
  auto capped = start(small, io, request("validate"));
  CHECK(wait(capped).failure.error_message() == "printed more than 4096 bytes on stdout");
  CHECK(wait_for([] { return zombie_children().empty(); }, 3s));
}

TEST_CASE("max_in_flight = 2: six invocations of a 300 ms hook, never more than two at once", "[exec]") {
  TempDir dir;
  IoThread io;
  std::string log = dir.file("times");
  auto path = script(dir, "timed.sh",
                     "echo \"start $(date +%s%N)\" >> \"$LOG\"\n"
                     "sleep 0.3\n"
                     "echo \"end $(date +%s%N)\" >> \"$LOG\"\n"
                     "echo '{\"allowed\": true}'\n");
  auto spec = exec_spec("timed", {path}, {{"LOG", log}});
  spec.max_in_flight = 2;
  ExecHook hook(spec, io.io);
  std::vector<Call> calls;
  for (int i = 0; i < 6; i++) calls.push_back(start(hook, io, request("validate"), 30s));
  for (auto& call : calls) {
    auto outcome = wait(call);
    INFO(outcome.failure.error_message());
    CHECK(outcome.failure.ok());
  }

  std::vector<std::pair<long long, int>> events;  // (time, +1 start / -1 end)
  for (const auto& line : lines_of(log)) {
    std::istringstream in(line);
    std::string what;
    long long t = 0;
    in >> what >> t;
    events.emplace_back(t, what == "start" ? 1 : -1);
  }
  REQUIRE(events.size() == 12);
  std::sort(events.begin(), events.end());  // at equal times an end comes first
  int running = 0, most = 0;
  for (const auto& [t, delta] : events) {
    running += delta;
    most = std::max(most, running);
  }
  CHECK(most == 2);
}

TEST_CASE("a queued invocation whose deadline passes, or that is cancelled, never spawns", "[exec]") {
  TempDir dir;
  IoThread io;
  std::string starts = dir.file("starts");
  // The running one holds the only slot for 3 s: the 200 ms deadline and the
  // cancel below must come while it runs, also on a loaded box.
  auto path = script(dir, "one.sh", "echo start >> \"$STARTS\"\nsleep 3\necho '{\"allowed\": true}'\n");
  auto spec = exec_spec("one", {path}, {{"STARTS", starts}});
  spec.max_in_flight = 1;
  ExecHook hook(spec, io.io);

  auto running = start(hook, io, request("validate"), 30s);
  REQUIRE(wait_for([&] { return lines_of(starts).size() == 1; }));
  auto expiring = start(hook, io, request("validate"), 200ms);
  auto cancelled = start(hook, io, request("validate"), 30s);
  auto expired = wait(expiring, 5s);
  CHECK(expired.failure.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK_THAT(expired.failure.error_message(), Catch::Matches("did not start within (1[0-9][0-9]|200) ms: .*"));
  cancelled.cancel->cancel();
  CHECK(wait(cancelled, 5s).failure.error_code() == grpc::StatusCode::CANCELLED);
  // An invocation whose deadline passed before it was queued.
  auto late = start(hook, io, request("validate"), -1ms);
  CHECK(wait(late, 5s).failure.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);

  CHECK(wait(running).failure.ok());
  std::this_thread::sleep_for(300ms);
  CHECK(lines_of(starts).size() == 1);
  // The slot is free again.
  auto next = start(hook, io, request("validate"), 30s);
  CHECK(wait(next).failure.ok());
  CHECK(lines_of(starts).size() == 2);
}

TEST_CASE("a child the test started itself is still reapable after exec hooks ran (nobody stole it)", "[exec]") {
  TempDir dir;
  IoThread io;
  // The managed delegate's place: a child of this process that exits while
  // hooks run and exit around it.
  pid_t delegate = ::fork();
  if (delegate == 0) {
    ::execl("/bin/sleep", "sleep", "0.3", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  REQUIRE(delegate > 0);
  auto path = script(dir, "quick.sh", "sleep 0.1\necho '{\"allowed\": true}'\n");
  ExecHook hook(exec_spec("quick", {path}), io.io);
  for (int round = 0; round < 4; round++) {
    std::vector<Call> calls;
    for (int i = 0; i < 4; i++) calls.push_back(start(hook, io, request("validate")));
    for (auto& call : calls) CHECK(wait(call).failure.ok());
  }
  int status = -1;
  CHECK(::waitpid(delegate, &status, 0) == delegate);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("stop() ends running and queued invocations with CANCELLED and kills their processes", "[exec]") {
  TempDir dir;
  IoThread io;
  auto spec = exec_spec("slow", {script(dir, "slow.sh", kSleepingGroup)}, {{"PIDS", dir.file("pids")}});
  spec.max_in_flight = 2;
  ExecHook hook(spec, io.io);
  std::vector<Call> calls;
  for (int i = 0; i < 3; i++) calls.push_back(start(hook, io, request("validate"), 60s));
  REQUIRE(wait_for([&] { return pid_files(dir).size() == 2; }));
  std::vector<pid_t> pids;
  for (const auto& f : pid_files(dir)) {
    for (pid_t p : read_pids(f)) pids.push_back(p);
  }
  REQUIRE(pids.size() == 4);

  auto stopping = Clock::now();
  hook.stop();
  CHECK(Clock::now() - stopping < 5s);
  // Every done ran before stop() returned.
  for (auto& call : calls) {
    REQUIRE(call.outcome.wait_for(0s) == std::future_status::ready);
    auto outcome = call.outcome.get();
    CHECK(outcome.failure.error_code() == grpc::StatusCode::CANCELLED);
    CHECK(outcome.failure.error_message() == "the wrapper is stopping");
    CHECK(*call.calls == 1);
  }
  CHECK(wait_for([&] { return std::all_of(pids.begin(), pids.end(), dead); }, 2s));
  CHECK(zombie_children().empty());
  CHECK(pid_files(dir).size() == 2);  // the queued one never started

  // After stop(): at once, CANCELLED.
  auto late = start(hook, io, request("validate"));
  REQUIRE(late.outcome.wait_for(0s) == std::future_status::ready);
  CHECK(late.outcome.get().failure.error_code() == grpc::StatusCode::CANCELLED);
  hook.stop();  // idempotent
}

namespace {

// A descriptor of this process that is not close-on-exec, as a library
// might open one: no hook may inherit it.
struct LeakyFd {
  int fd = ::open("/dev/null", O_RDONLY);
  ~LeakyFd() { ::close(fd); }
};

// While it lasts, SIGUSR1 is blocked in this thread (and so in the io
// thread started after it) and SIGHUP ignored (as under nohup); the
// wrapper's own setup (common/signals.cc) blocks five signals and ignores
// SIGPIPE the same way.
struct ChangedSignals {
  sigset_t saved_mask;
  struct sigaction saved_hup {};
  ChangedSignals() {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &usr1, &saved_mask);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGHUP, &ignore, &saved_hup);
  }
  ~ChangedSignals() {
    ::pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);
    ::sigaction(SIGHUP, &saved_hup, nullptr);
  }
};

// "Name:\tvalue" lines of /proc/<pid>/status as written by the hook.
std::map<std::string, std::string> status_fields(const std::string& path) {
  std::map<std::string, std::string> fields;
  for (const auto& line : lines_of(path)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    fields[line.substr(0, colon)] = value;
  }
  return fields;
}

}  // namespace

TEST_CASE("a hook's process has only file descriptors 0, 1 and 2", "[exec]") {
  TempDir dir;
  LeakyFd leaky;
  REQUIRE(leaky.fd > 2);
  IoThread io;
  std::string out = dir.file("fds");
  // Python, which opens nothing of its own that it keeps (a shell does: dash
  // a copy of stdin, a script its file); fstat opens nothing either.
  const char* program =
      "import os, sys\n"
      "def is_open(fd):\n"
      "    try:\n"
      "        os.fstat(fd)\n"
      "        return True\n"
      "    except OSError:\n"
      "        return False\n"
      "fds = [str(fd) for fd in range(4096) if is_open(fd)]\n"
      "open(os.environ['OUT'], 'w').write('\\n'.join(fds) + '\\n')\n"
      "sys.stdin.read()\n"
      "print('{\"allowed\": true}')\n";
  ExecHook hook(exec_spec("fds", {"/usr/bin/python3", "-c", program}, {{"OUT", out}}), io.io);
  auto call = start(hook, io, request("validate"));
  auto outcome = wait(call);
  INFO(outcome.failure.error_message());
  REQUIRE(outcome.failure.ok());
  auto fds = lines_of(out);
  std::sort(fds.begin(), fds.end());
  CHECK(fds == std::vector<std::string>{"0", "1", "2"});
}

TEST_CASE("a hook's process leads its own process group, with no signal blocked or ignored", "[exec]") {
  TempDir dir;
  ChangedSignals changed;
  IoThread io;
  std::string out = dir.file("status");
  // Builtins only: dash blocks every signal around a fork, so a child
  // reading /proc/$$/status could see that instead.
  const char* program =
      "while read -r name value; do\n"
      "  case $name in Pid:|SigBlk:|SigIgn:) echo \"$name $value\";; esac\n"
      "done < /proc/$$/status > \"$OUT\"\n"
      "read -r pid comm state ppid pgrp rest < /proc/$$/stat\n"
      "echo \"Pgrp: $pgrp\" >> \"$OUT\"\n"
      "while read -r line; do :; done\n"
      "echo '{\"allowed\": true}'\n";
  ExecHook hook(exec_spec("sig", {"/bin/sh", "-c", program}, {{"OUT", out}}), io.io);
  auto call = start(hook, io, request("validate"));
  auto outcome = wait(call);
  INFO(outcome.failure.error_message());
  REQUIRE(outcome.failure.ok());
  auto fields = status_fields(out);
  INFO(read_file(out));
  CHECK(fields["SigBlk"] == "0000000000000000");
  CHECK(fields["SigIgn"] == "0000000000000000");
  REQUIRE_FALSE(fields["Pid"].empty());
  CHECK(fields["Pgrp"] == fields["Pid"]);
  CHECK(fields["Pgrp"] != std::to_string(::getpgrp()));
}

TEST_CASE("no zombie children remain after the exec tests", "[exec]") {
  CHECK(wait_for([] { return zombie_children().empty(); }, 3s));
}
