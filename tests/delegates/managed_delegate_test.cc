// The managed delegate: clean environment, placeholders, restarts, and no
// orphan when the wrapper is killed.
#include "tests/support/harness.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/prctl.h>
#include <csignal>
#include <filesystem>
#include <fstream>

using namespace owrap::test;
using Catch::Contains;

namespace {
// Gone, or a zombie nobody has reaped yet: either way not running.
bool dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string content((std::istreambuf_iterator<char>(stat)), {});
  auto close = content.rfind(')');
  return close != std::string::npos && content.size() > close + 2 && content[close + 2] == 'Z';
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
  std::istringstream lines(outer.proc->log());
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j["message"] == "delegate started") all.push_back(j["pid"].get<pid_t>());
    if (j.contains("delegate") && j["delegate"] == "inner" &&
        j["message"].get<std::string>().find("delegate started") != std::string::npos) {
      auto inner =
          nlohmann::json::parse(j["message"].get<std::string>().substr(std::string("[inner] ").size()), nullptr, false);
      if (!inner.is_discarded() && inner["message"] == "delegate started") all.push_back(inner["pid"].get<pid_t>());
    }
  }
  REQUIRE(all.size() == 2);
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
  CHECK_FALSE(std::filesystem::exists(dir.file("run/acme.sock")));
}
