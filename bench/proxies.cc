#include "bench/proxies.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

namespace owrap::bench {
namespace {

using test::Process;
using test::TempDir;

// PATH first, then the sbin directories a non-root PATH often lacks.
std::string find_binary(const std::string& name) {
  std::string dirs = std::getenv("PATH") ? std::getenv("PATH") : "";
  dirs += ":/usr/sbin:/usr/local/sbin:/sbin";
  std::istringstream in(dirs);
  for (std::string d; std::getline(in, d, ':');) {
    if (d.empty()) continue;
    std::string path = d + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

void print_missing(const std::string& name) {
  std::printf("%s is not installed: its column is skipped (install it with `bash bench/setup.sh`, as root)\n",
              name.c_str());
}

// The first line a binary prints for `flag` (stdout or stderr), for labels.
std::string version_line(const std::string& bin, const std::string& flag) {
  std::string out, err;
  test::run_command({bin, flag}, &out, &err);
  std::string text = out.empty() ? err : out;
  return text.substr(0, text.find('\n'));
}

// The upstream version after `marker`, without the Debian revision.
std::string version_after(const std::string& text, const std::string& marker) {
  auto at = text.find(marker);
  if (at == std::string::npos) return "?";
  at += marker.size();
  return text.substr(at, text.find_first_of(" \n-", at) - at);
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> kids;
  for (const auto& p : test::all_processes()) {
    if (p.ppid == parent) kids.push_back(p.pid);
  }
  return kids;
}

// `mode http` end to end: HAProxy terminates the client's HTTP/2 and opens
// its own HTTP/2 connection to the driver, as it would for any gRPC
// backend. Threads are left at the default (one per CPU), as a user who
// writes no nbthread line runs it. No `log` line: no access log, like the
// wrapper at log_level warn. Long client/server timeouts so that watches
// are not cut.
std::string haproxy_config(const std::string& socket, const std::string& driver_socket) {
  std::ostringstream c;
  c << "global\n"
       "  maxconn 4096\n"
       "defaults\n"
       "  mode http\n"
       "  timeout connect 5s\n"
       "  timeout client 1h\n"
       "  timeout server 1h\n"
       "frontend grpc_in\n"
       "  bind unix@"
    << socket
    << " proto h2\n"
       "  default_backend driver\n"
       "backend driver\n"
       "  server memory unix@"
    << driver_socket << " proto h2\n";
  return c.str();
}

// One worker (the Debian default is `auto`, one per CPU); upstream
// keepalive so that a call does not open a new driver connection (nginx's
// gRPC proxy runs one stream per upstream connection and, without
// keepalive, closes it after the call). The memory driver accepts only its
// own uid (SO_PEERCRED): nginx started as root would switch its workers to
// `nobody`, so they are told to stay root then.
std::string nginx_config(const TempDir& dir, const std::string& socket, const std::string& driver_socket) {
  std::ostringstream c;
  if (::geteuid() == 0) c << "user root;\n";
  c << "worker_processes 1;\n"
    << "pid " << dir.file("nginx.pid") << ";\n"
    << "error_log " << dir.file("nginx-error.log") << " warn;\n"
    << "events { worker_connections 4096; }\n"
    << "http {\n"
    << "  access_log off;\n";
  for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
    c << "  " << t << "_temp_path " << dir.file(std::string("nginx-") + t) << ";\n";
  }
  c << "  upstream driver {\n"
    << "    server unix:" << driver_socket << ";\n"
    << "    keepalive 64;\n"
    << "  }\n"
    << "  server {\n"
    << "    listen unix:" << socket << " http2;\n"
    << "    http2_max_concurrent_streams 1000;\n"
    << "    location / {\n"
    << "      grpc_pass grpc://driver;\n"
    << "      grpc_read_timeout 1h;\n"
    << "      grpc_send_timeout 1h;\n"
    << "    }\n"
    << "  }\n"
    << "}\n";
  return c.str();
}

std::unique_ptr<ProxyProc> await(std::unique_ptr<ProxyProc> p, const std::string& what, size_t min_pids) {
  // The socket file, not a gRPC call (test::wait_for_socket): whether the
  // proxy relays is checked afterwards, with a message that says how not.
  bool up = test::wait_for([&] { return std::filesystem::exists(p->socket) && p->pids().size() >= min_pids; },
                           std::chrono::seconds(15));
  if (!up) throw std::runtime_error(what + " did not come up: " + p->logs());
  return p;
}

}  // namespace

std::string ProxyProc::logs() const {
  return proc->log() + (error_log.empty() ? "" : test::read_file(error_log));
}

std::vector<pid_t> ProxyProc::pids() const {
  std::vector<pid_t> all{proc->pid()};
  for (pid_t kid : children_of(proc->pid())) all.push_back(kid);
  return all;
}

std::unique_ptr<ProxyProc> start_haproxy(const TempDir& dir, const std::string& driver_socket) {
  std::string bin = find_binary("haproxy");
  if (bin.empty()) {
    print_missing("haproxy");
    return nullptr;
  }
  auto p = std::make_unique<ProxyProc>();
  p->socket = dir.file("haproxy.sock");
  p->label = "(h) HAProxy " + version_after(version_line(bin, "-v"), "version ");
  std::string config = dir.file("haproxy.cfg");
  test::write_file(config, haproxy_config(p->socket, driver_socket));
  // -db: foreground, no daemon; a single process with its threads.
  p->proc = std::make_unique<Process>(std::vector<std::string>{bin, "-f", config, "-db"}, dir.file("haproxy.log"));
  return await(std::move(p), "haproxy", 1);
}

std::unique_ptr<ProxyProc> start_nginx(const TempDir& dir, const std::string& driver_socket) {
  std::string bin = find_binary("nginx");
  if (bin.empty()) {
    print_missing("nginx");
    return nullptr;
  }
  auto p = std::make_unique<ProxyProc>();
  p->socket = dir.file("nginx.sock");
  p->label = "(n) nginx " + version_after(version_line(bin, "-v"), "nginx/");
  std::string config = dir.file("nginx.conf");
  p->error_log = dir.file("nginx-error.log");
  test::write_file(config, nginx_config(dir, p->socket, driver_socket));
  // -e: the error log before the configuration is read (else
  // /var/log/nginx); -p: the prefix for anything relative.
  p->proc = std::make_unique<Process>(
      std::vector<std::string>{bin, "-p", dir.path() + "/", "-e", p->error_log, "-c", config, "-g", "daemon off;"},
      dir.file("nginx.log"));
  // The master and its one worker.
  return await(std::move(p), "nginx", 2);
}

}  // namespace owrap::bench
