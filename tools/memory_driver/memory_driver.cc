#include "tools/memory_driver/memory_driver.h"

#include "call/rpc.h"
#include "common/grpc_util.h"
#include "common/log.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <unistd.h>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>

namespace owrap::memory {

namespace asio = boost::asio;
using grpc::Status;
using grpc::StatusCode;

namespace {

bool known_rpc(const std::string& name) {
  return rpc_from_name(name).has_value();
}

// The VM driver's id rule, applied before any path is derived from an id.
std::string id_error(const std::string& what, const std::string& id) {
  if (id.empty()) return what + " must not be empty";
  if (id.size() > 128) return what + " is longer than 128 bytes";
  if (id == "." || id == "..") return what + " must not be \".\" or \"..\"";
  for (unsigned char c : id) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-')) {
      return what + " \"" + id + "\" has characters outside [A-Za-z0-9._-]";
    }
  }
  return {};
}

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void set_condition(v1::DriverSandboxStatus* status, const std::string& type, bool value, const std::string& reason,
                   const std::string& message) {
  v1::DriverCondition* cond = nullptr;
  for (auto& c : *status->mutable_conditions())
    if (c.type() == type) cond = &c;
  if (cond == nullptr) {
    cond = status->add_conditions();
    cond->set_type(type);
  }
  const char* text = value ? "True" : "False";
  if (cond->status() != text) cond->set_last_transition_time(now_rfc3339());
  cond->set_status(text);
  cond->set_reason(reason);
  cond->set_message(message);
}

// Injected failures carry error details (google.rpc.Status) so tests can
// prove they pass through a proxy untouched.
Status injected(const char* rpc, StatusCode code) {
  std::string msg = std::string("injected failure: ") + rpc + " " + std::string(status_code_name(code));
  return Status(code, msg, encode_rpc_status(code, msg));
}

Status parse_driver_config(const google::protobuf::Struct& cfg, Faults& out) {
  for (const auto& [key, value] : cfg.fields()) {
    if (key != "fail" && key != "delay_ms") {
      return Status(StatusCode::INVALID_ARGUMENT, "invalid memory driver_config: unknown field \"" + key + "\"");
    }
    if (!value.has_struct_value()) {
      return Status(StatusCode::INVALID_ARGUMENT, "invalid memory driver_config: " + key + " must be an object");
    }
    for (const auto& [rpc, v] : value.struct_value().fields()) {
      std::string path = "invalid memory driver_config: " + key + "." + rpc;
      if (!known_rpc(rpc)) return Status(StatusCode::INVALID_ARGUMENT, path + ": unknown RPC");
      if (key == "fail") {
        auto code = v.has_string_value() ? parse_status_code(v.string_value()) : std::nullopt;
        if (!code || *code == StatusCode::OK) {
          return Status(StatusCode::INVALID_ARGUMENT,
                        path + ": must be a gRPC status code name such as \"UNAVAILABLE\"");
        }
        out.fail[rpc] = *code;
      } else {
        if (!v.has_number_value() || v.number_value() < 0) {
          return Status(StatusCode::INVALID_ARGUMENT, path + ": must be a non-negative number of milliseconds");
        }
        out.delay[rpc] = std::chrono::milliseconds(static_cast<int64_t>(v.number_value()));
      }
    }
  }
  return Status::OK;
}

}  // namespace

bool parse_fault_flag(const std::string& value, bool is_delay, Faults& out, std::string& error) {
  auto eq = value.find('=');
  if (eq == std::string::npos) {
    error = "expected RPC=" + std::string(is_delay ? "MS" : "CODE") + ", got \"" + value + "\"";
    return false;
  }
  std::string rpc = value.substr(0, eq), arg = value.substr(eq + 1);
  if (!known_rpc(rpc)) {
    error = "unknown RPC \"" + rpc + "\"";
    return false;
  }
  if (is_delay) {
    try {
      out.delay[rpc] = std::chrono::milliseconds(std::stoll(arg));
    } catch (...) {
      error = "delay for " + rpc + " must be a number of milliseconds";
      return false;
    }
    return true;
  }
  auto code = parse_status_code(arg);
  if (!code || *code == StatusCode::OK) {
    error = "unknown status code \"" + arg + "\"";
    return false;
  }
  out.fail[rpc] = *code;
  return true;
}

bool parse_reply_garbage_flag(const std::string& value, Options& out, std::string& error) {
  if (!known_rpc(value)) {
    error = "unknown RPC \"" + value + "\"";
    return false;
  }
  out.reply_garbage.insert(value);
  return true;
}

// One JSON line per finished call, for tests that check what a driver
// behind a proxy observed: deadline, cancellation, metadata.
class MemoryDriver::Recorder {
 public:
  explicit Recorder(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) {}
  ~Recorder() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write(const nlohmann::json& line) {
    if (fd_ < 0) return;
    std::string text = line.dump() + "\n";
    std::lock_guard<std::mutex> lock(mu_);
    (void)!::write(fd_, text.data(), text.size());
  }

 private:
  std::mutex mu_;
  int fd_;
};

// A unary call: optional delay (on a timer, never blocking a gRPC thread),
// then the work, then one record line. Finish is only ever called from the
// io thread, and the object is deleted there too, so the timer, a cancel and
// the deletion are ordered.
class MemoryDriver::Call : public grpc::ServerUnaryReactor {
 public:
  Call(MemoryDriver& driver, grpc::CallbackServerContext* ctx, const char* rpc, std::string sandbox_id,
       std::chrono::milliseconds delay, std::optional<Status> fault, Work work)
      : driver_(driver),
        ctx_(ctx),
        rpc_(rpc),
        sandbox_id_(std::move(sandbox_id)),
        delay_(delay),
        fault_(std::move(fault)),
        work_(std::move(work)),
        timer_(driver.io_) {
    driver_.active_calls_++;
    record_["rpc"] = rpc_;
    if (!sandbox_id_.empty()) record_["sandbox_id"] = sandbox_id_;
    gpr_timespec raw = ctx->raw_deadline();
    if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) != 0) {
      record_["deadline_ms"] =
          std::chrono::duration_cast<std::chrono::milliseconds>(ctx->deadline() - std::chrono::system_clock::now())
              .count();
    } else {
      record_["deadline_ms"] = nullptr;
    }
    nlohmann::json md = nlohmann::json::object();
    for (const auto& [k, v] : ctx->client_metadata()) {
      std::string key(k.data(), k.size());
      if (is_transport_metadata(key) || (key.size() > 4 && key.compare(key.size() - 4, 4, "-bin") == 0)) continue;
      md[key] = std::string(v.data(), v.size());
    }
    record_["metadata"] = md;
  }

  void start() {
    if (driver_.recorder_ && driver_.options_.record_arrivals) {
      nlohmann::json arrived = {{"rpc", rpc_}, {"arrived", true}};
      if (!sandbox_id_.empty()) arrived["sandbox_id"] = sandbox_id_;
      driver_.recorder_->write(arrived);
    }
    asio::post(driver_.io_, [this] {
      if (delay_.count() == 0) {
        run();
        return;
      }
      timer_.expires_after(delay_);
      timer_.async_wait([this](const boost::system::error_code&) { run(); });
    });
  }

  void OnCancel() override {
    cancelled_ = true;
    asio::post(driver_.io_, [this] { timer_.cancel(); });
  }
  void OnDone() override {
    asio::post(driver_.io_, [this] {
      driver_.active_calls_--;
      delete this;
    });
  }

 private:
  void run() {
    if (finished_) return;
    finished_ = true;
    Status status = cancelled_ || ctx_->IsCancelled() ? Status(StatusCode::CANCELLED, "call cancelled by the client")
                    : fault_                          ? *fault_
                                                      : work_();
    record_["cancelled"] = cancelled_.load() || ctx_->IsCancelled();
    record_["status"] = status_code_name(status.error_code());
    if (driver_.recorder_) driver_.recorder_->write(record_);
    log_at(LogLevel::kDebug, "call", [&] {
      return nlohmann::json{
          {"rpc", rpc_}, {"sandbox_id", sandbox_id_}, {"status", status_code_name(status.error_code())}};
    });
    Finish(status);
  }

  MemoryDriver& driver_;
  grpc::CallbackServerContext* ctx_;
  const char* rpc_;
  std::string sandbox_id_;
  std::chrono::milliseconds delay_;
  std::optional<Status> fault_;
  Work work_;
  asio::steady_timer timer_;
  nlohmann::json record_;
  std::atomic<bool> cancelled_{false};
  bool finished_ = false;
};

MemoryDriver::MemoryDriver(asio::io_context& io, Options options)
    : io_(io),
      options_(std::move(options)),
      fanout_(io, WatchFanoutOptions{options_.watch_queue_capacity, std::chrono::milliseconds(10000)},
              options_.lazy_headers) {
  if (!options_.record_file.empty()) recorder_ = std::make_unique<Recorder>(options_.record_file);
  // A method taken off the typed service is routed to the generic one, which
  // can answer with bytes no typed handler could produce.
  const auto* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(v1::ComputeDriver::service_full_name());
  for (const auto& rpc : options_.reply_garbage) MarkMethodGeneric(service->FindMethodByName(rpc)->index());
}

MemoryDriver::~MemoryDriver() = default;

void MemoryDriver::shutdown_watchers() {
  fanout_.close_all(Status(StatusCode::UNAVAILABLE, "memory driver shutting down"));
}

std::string MemoryDriver::load_state() {
  if (options_.state_file.empty() || !std::filesystem::exists(options_.state_file)) return {};
  std::ifstream in(options_.state_file, std::ios::binary);
  openshell::memory::v1::MemoryState state;
  if (!state.ParseFromIstream(&in)) return "state file " + options_.state_file + " is corrupt";
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& sb : state.sandboxes()) sandboxes_[sb.id()] = sb;
  workspaces_.insert(state.workspaces().begin(), state.workspaces().end());
  next_instance_ = std::max<uint64_t>(state.next_instance(), 1);
  log_info("loaded state", {{"sandboxes", sandboxes_.size()}, {"state_file", options_.state_file}});
  return {};
}

// Write to a temp file, fsync, rename: a crash leaves the old or the new
// state, never half of one.
void MemoryDriver::persist() {
  if (options_.state_file.empty()) return;
  openshell::memory::v1::MemoryState state;
  for (const auto& [id, sb] : sandboxes_) *state.add_sandboxes() = sb;
  for (const auto& ws : workspaces_) state.add_workspaces(ws);
  state.set_next_instance(next_instance_);
  std::string bytes = state.SerializeAsString();
  std::string tmp = options_.state_file + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    log_error("cannot write state file", {{"path", tmp}, {"error", std::strerror(errno)}});
    return;
  }
  bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), options_.state_file.c_str()) != 0) {
    log_error("cannot write state file", {{"path", options_.state_file}, {"error", std::strerror(errno)}});
  }
}

grpc::ServerUnaryReactor* MemoryDriver::respond(grpc::CallbackServerContext* ctx, const char* rpc,
                                                std::string sandbox_id, const Faults& faults, Work work) {
  std::optional<Status> fault;
  if (auto it = faults.fail.find(rpc); it != faults.fail.end()) fault = injected(rpc, it->second);
  auto delay = std::chrono::milliseconds(0);
  if (auto it = faults.delay.find(rpc); it != faults.delay.end()) delay = it->second;
  auto* call = new Call(*this, ctx, rpc, std::move(sandbox_id), delay, std::move(fault), std::move(work));
  call->start();
  return call;
}

Faults MemoryDriver::faults_for(const std::string& sandbox_id) {
  Faults faults = options_.global_faults;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sandboxes_.find(sandbox_id);
  if (it != sandboxes_.end() && it->second.spec().template_().has_driver_config()) {
    Faults own;
    if (parse_driver_config(it->second.spec().template_().driver_config(), own).ok()) {
      for (auto& [k, v] : own.fail) faults.fail[k] = v;
      for (auto& [k, v] : own.delay) faults.delay[k] = v;
    }
  }
  return faults;
}

Status MemoryDriver::check_sandbox(const v1::DriverSandbox& sandbox, Faults& faults) const {
  if (auto e = id_error("sandbox.id", sandbox.id()); !e.empty()) return Status(StatusCode::INVALID_ARGUMENT, e);
  if (options_.schema != DriverSchema::none) return check_driver_config(options_.schema, sandbox);
  if (!sandbox.spec().template_().has_driver_config()) return Status::OK;
  return parse_driver_config(sandbox.spec().template_().driver_config(), faults);
}

void MemoryDriver::emit_snapshot(const v1::DriverSandbox& sandbox) {
  auto ev = std::make_shared<v1::WatchSandboxesEvent>();
  *ev->mutable_sandbox()->mutable_sandbox() = sandbox;
  fanout_.publish(std::move(ev));
}

void MemoryDriver::emit_platform(const std::string& id, const std::string& reason, const std::string& message) {
  auto ev = std::make_shared<v1::WatchSandboxesEvent>();
  auto* pe = ev->mutable_platform_event();
  pe->set_sandbox_id(id);
  auto* e = pe->mutable_event();
  e->set_timestamp_ms(now_ms());
  e->set_source(options_.driver_name);
  e->set_type("Normal");
  e->set_reason(reason);
  e->set_message(message);
  (*e->mutable_metadata())["driver"] = options_.driver_name;
  fanout_.publish(std::move(ev));
}

grpc::ServerUnaryReactor* MemoryDriver::GetCapabilities(grpc::CallbackServerContext* ctx,
                                                        const v1::GetCapabilitiesRequest*,
                                                        v1::GetCapabilitiesResponse* resp) {
  return respond(ctx, "GetCapabilities", {}, options_.global_faults, [this, resp] {
    resp->set_driver_name(options_.driver_name);
    std::string version = options_.driver_version;
    if (options_.schema != DriverSchema::none) version += std::string(" (schema ") + schema_name(options_.schema) + ")";
    resp->set_driver_version(version);
    resp->set_default_image(options_.default_image);
    resp->set_gateway_manages_lifecycle(options_.gateway_manages_lifecycle);
    return Status::OK;
  });
}

grpc::ServerUnaryReactor* MemoryDriver::GetGatewayListenerRequirements(
    grpc::CallbackServerContext* ctx, const v1::GetGatewayListenerRequirementsRequest*,
    v1::GetGatewayListenerRequirementsResponse* resp) {
  return respond(ctx, "GetGatewayListenerRequirements", {}, options_.global_faults, [this, resp] {
    if (options_.listener_requirements.empty()) {
      return Status(StatusCode::UNIMPLEMENTED, "memory driver has no gateway listener requirements");
    }
    for (const auto& r : options_.listener_requirements) {
      auto* req = resp->add_requirements();
      req->set_reason("memory driver --listener " + r);
      if (r == "loopback")
        req->mutable_loopback_interface();
      else if (r == "default-route")
        req->mutable_default_route_interface();
      else
        req->set_exact_bind_address(r.rfind("exact:", 0) == 0 ? r.substr(6) : r);
    }
    return Status::OK;
  });
}

grpc::ServerUnaryReactor* MemoryDriver::ValidateSandboxCreate(grpc::CallbackServerContext* ctx,
                                                              const v1::ValidateSandboxCreateRequest* req,
                                                              v1::ValidateSandboxCreateResponse*) {
  Faults faults = options_.global_faults;
  Status bad = check_sandbox(req->sandbox(), faults);
  if (const std::string& token = req->sandbox().spec().sandbox_token(); options_.echo_token && !token.empty()) {
    ctx->AddInitialMetadata("x-echo-token", token);
    ctx->AddTrailingMetadata("x-echo-token-bin", token);
    std::string message = "rejected token " + token;
    bad = Status(StatusCode::FAILED_PRECONDITION, message, encode_rpc_status(StatusCode::FAILED_PRECONDITION, message));
  }
  return respond(ctx, "ValidateSandboxCreate", req->sandbox().id(), bad.ok() ? faults : Faults{},
                 [bad] { return bad; });
}

grpc::ServerUnaryReactor* MemoryDriver::CreateSandbox(grpc::CallbackServerContext* ctx,
                                                      const v1::CreateSandboxRequest* req, v1::CreateSandboxResponse*) {
  Faults faults = options_.global_faults;
  Status bad = check_sandbox(req->sandbox(), faults);
  v1::DriverSandbox sandbox = req->sandbox();
  return respond(ctx, "CreateSandbox", sandbox.id(), bad.ok() ? faults : Faults{},
                 [this, bad, sandbox = std::move(sandbox)]() mutable {
                   if (!bad.ok()) return bad;
                   std::lock_guard<std::mutex> lock(mu_);
                   if (sandboxes_.count(sandbox.id())) {
                     return Status(StatusCode::ALREADY_EXISTS, "sandbox \"" + sandbox.id() + "\" already exists");
                   }
                   if (!sandbox.workspace().empty() && !workspaces_.count(sandbox.workspace())) {
                     return Status(
                         StatusCode::FAILED_PRECONDITION,
                         "workspace \"" + sandbox.workspace() + "\" does not exist; call EnsureWorkspace first");
                   }
                   // The token is a secret: it is neither stored, persisted nor echoed.
                   sandbox.mutable_spec()->clear_sandbox_token();
                   auto* status = sandbox.mutable_status();
                   status->set_sandbox_name(sandbox.name());
                   status->set_instance_id("mem-" + std::to_string(next_instance_++));
                   set_condition(status, "Ready", true, "Running", "sandbox is running");
                   set_condition(status, "Suspended", false, "Running", "");
                   sandboxes_[sandbox.id()] = sandbox;
                   persist();
                   emit_snapshot(sandbox);
                   emit_platform(sandbox.id(), "Created", "sandbox created");
                   return Status::OK;
                 });
}

grpc::ServerUnaryReactor* MemoryDriver::GetSandbox(grpc::CallbackServerContext* ctx, const v1::GetSandboxRequest* req,
                                                   v1::GetSandboxResponse* resp) {
  std::string id = req->sandbox_id();
  return respond(ctx, "GetSandbox", id, faults_for(id), [this, id, resp] {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sandboxes_.find(id);
    if (it == sandboxes_.end()) return Status(StatusCode::NOT_FOUND, "sandbox \"" + id + "\" not found");
    *resp->mutable_sandbox() = it->second;
    return Status::OK;
  });
}

grpc::ServerUnaryReactor* MemoryDriver::ListSandboxes(grpc::CallbackServerContext* ctx, const v1::ListSandboxesRequest*,
                                                      v1::ListSandboxesResponse* resp) {
  return respond(ctx, "ListSandboxes", {}, options_.global_faults, [this, resp] {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, sb] : sandboxes_) *resp->add_sandboxes() = sb;
    return Status::OK;
  });
}

Status MemoryDriver::set_running(const std::string& id, bool running, const char* rpc) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sandboxes_.find(id);
  if (it == sandboxes_.end()) return Status(StatusCode::NOT_FOUND, "sandbox \"" + id + "\" not found");
  auto* status = it->second.mutable_status();
  bool now_running = true;
  for (const auto& c : status->conditions())
    if (c.type() == "Suspended" && c.status() == "True") now_running = false;
  if (now_running == running) return Status::OK;  // idempotent: no change, no event
  set_condition(status, "Ready", running, running ? "Running" : "Stopped",
                running ? "sandbox is running" : "sandbox is stopped");
  set_condition(status, "Suspended", !running, running ? "Running" : "Stopped", "");
  persist();
  emit_snapshot(it->second);
  emit_platform(id, running ? "Started" : "Stopped", std::string(rpc) + " completed");
  return Status::OK;
}

grpc::ServerUnaryReactor* MemoryDriver::StopSandbox(grpc::CallbackServerContext* ctx, const v1::StopSandboxRequest* req,
                                                    v1::StopSandboxResponse*) {
  std::string id = req->sandbox_id();
  return respond(ctx, "StopSandbox", id, faults_for(id), [this, id] { return set_running(id, false, "StopSandbox"); });
}

grpc::ServerUnaryReactor* MemoryDriver::StartSandbox(grpc::CallbackServerContext* ctx,
                                                     const v1::StartSandboxRequest* req, v1::StartSandboxResponse*) {
  std::string id = req->sandbox_id();
  return respond(ctx, "StartSandbox", id, faults_for(id), [this, id] { return set_running(id, true, "StartSandbox"); });
}

grpc::ServerUnaryReactor* MemoryDriver::DeleteSandbox(grpc::CallbackServerContext* ctx,
                                                      const v1::DeleteSandboxRequest* req,
                                                      v1::DeleteSandboxResponse* resp) {
  std::string id = req->sandbox_id();
  return respond(ctx, "DeleteSandbox", id, faults_for(id), [this, id, resp] {
    std::lock_guard<std::mutex> lock(mu_);
    bool existed = sandboxes_.erase(id) > 0;
    resp->set_deleted(existed);
    if (existed) {
      persist();
      auto ev = std::make_shared<v1::WatchSandboxesEvent>();
      ev->mutable_deleted()->set_sandbox_id(id);
      fanout_.publish(std::move(ev));
    }
    return Status::OK;
  });
}

grpc::ServerWriteReactor<v1::WatchSandboxesEvent>* MemoryDriver::WatchSandboxes(grpc::CallbackServerContext* ctx,
                                                                                const v1::WatchSandboxesRequest*) {
  if (auto it = options_.global_faults.fail.find("WatchSandboxes"); it != options_.global_faults.fail.end()) {
    class Refused : public grpc::ServerWriteReactor<v1::WatchSandboxesEvent> {
     public:
      explicit Refused(Status s) { Finish(s); }
      void OnDone() override { delete this; }
    };
    return new Refused(injected("WatchSandboxes", it->second));
  }
  return fanout_.subscribe(ctx);
}

grpc::ServerUnaryReactor* MemoryDriver::EnsureWorkspace(grpc::CallbackServerContext* ctx,
                                                        const v1::EnsureWorkspaceRequest* req,
                                                        v1::EnsureWorkspaceResponse*) {
  std::string ws = req->workspace();
  return respond(ctx, "EnsureWorkspace", {}, options_.global_faults, [this, ws] {
    if (auto e = id_error("workspace", ws); !e.empty()) return Status(StatusCode::INVALID_ARGUMENT, e);
    std::lock_guard<std::mutex> lock(mu_);
    if (workspaces_.insert(ws).second) persist();
    return Status::OK;
  });
}

grpc::ServerUnaryReactor* MemoryDriver::DeleteWorkspace(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteWorkspaceRequest* req,
                                                        v1::DeleteWorkspaceResponse*) {
  std::string ws = req->workspace();
  return respond(ctx, "DeleteWorkspace", {}, options_.global_faults, [this, ws] {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, sb] : sandboxes_) {
      if (sb.workspace() == ws) {
        return Status(StatusCode::FAILED_PRECONDITION, "workspace \"" + ws + "\" is used by sandbox \"" + id + "\"");
      }
    }
    if (workspaces_.erase(ws) > 0) persist();
    return Status::OK;
  });
}

// /openshell.compute.test.Echo/<anything>: echoes every request message back
// and finishes OK with the method name in trailing metadata. Every other
// unknown method is UNIMPLEMENTED, as in any driver.
grpc::ServerGenericBidiReactor* MemoryDriver::ExtensionService::CreateReactor(grpc::GenericCallbackServerContext* ctx) {
  class Echo : public grpc::ServerGenericBidiReactor {
   public:
    explicit Echo(grpc::GenericCallbackServerContext* ctx) : ctx_(ctx) {
      ctx_->AddTrailingMetadata("echo-method", ctx_->method());
      for (const auto& [k, v] : ctx_->client_metadata()) {
        if (std::string(k.data(), k.size()) == "traceparent") {
          ctx_->AddTrailingMetadata("echo-traceparent", std::string(v.data(), v.size()));
        }
      }
      StartRead(&buf_);
    }
    void OnReadDone(bool ok) override {
      if (!ok) {
        Finish(Status::OK);
        return;
      }
      StartWrite(&buf_);
    }
    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(Status(StatusCode::CANCELLED, "client went away"));
        return;
      }
      StartRead(&buf_);
    }
    void OnDone() override { delete this; }

   private:
    grpc::GenericCallbackServerContext* ctx_;
    grpc::ByteBuffer buf_;
  };
  class Unimplemented : public grpc::ServerGenericBidiReactor {
   public:
    explicit Unimplemented(const std::string& method) {
      Finish(Status(StatusCode::UNIMPLEMENTED, "method " + method + " is not implemented by the memory driver"));
    }
    void OnDone() override { delete this; }
  };
  // A method --reply-garbage took off the typed service: a length-delimited
  // field 1 that announces 64 bytes and carries 7, so no message type parses it.
  // A watch (`streaming`) stays open after its garbled event, as a live
  // stream would, until the client cancels.
  class Garbage : public grpc::ServerGenericBidiReactor {
   public:
    explicit Garbage(bool streaming) : streaming_(streaming) {
      static const char kTruncated[] = "\x0a\x40partial";
      grpc::Slice slice(kTruncated, sizeof kTruncated - 1);
      reply_ = grpc::ByteBuffer(&slice, 1);
      StartRead(&request_);
    }
    // Reactions may run concurrently: nothing may start after Finish.
    void OnReadDone(bool) override {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      if (streaming_) {
        StartWrite(&reply_);
        return;
      }
      finished_ = true;
      StartWriteAndFinish(&reply_, grpc::WriteOptions(), Status::OK);
    }
    void OnCancel() override {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      finished_ = true;
      Finish(Status(StatusCode::CANCELLED, "call cancelled"));
    }
    void OnDone() override { delete this; }

   private:
    std::mutex mu_;
    bool finished_ = false;
    bool streaming_;
    grpc::ByteBuffer request_, reply_;
  };
  if (ctx->method().rfind("/openshell.compute.test.Echo/", 0) == 0) return new Echo(ctx);
  // Only a contract method --reply-garbage took off the typed service gets
  // here as itself; any other name under the service is unknown.
  static const std::string kService = "/openshell.compute.v1.ComputeDriver/";
  if (ctx->method().rfind(kService, 0) == 0 && rpc_from_name(ctx->method().substr(kService.size()))) {
    return new Garbage(ctx->method() == kService + "WatchSandboxes");
  }
  return new Unimplemented(ctx->method());
}

}  // namespace owrap::memory
