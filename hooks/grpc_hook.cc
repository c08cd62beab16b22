#include "hooks/grpc_hook.h"

#include "common/completion_tag.h"
#include "common/grpc_util.h"
#include "common/log.h"
#include "hooks.grpc.pb.h"

#include <grpcpp/alarm.h>
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/async_unary_call.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <pthread.h>

namespace owrap {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstDescribeRetry{200};
constexpr milliseconds kMaxDescribeRetry{10000};

int clamp_int(long long v) {
  return static_cast<int>(std::clamp<long long>(v, 0, INT_MAX));
}

std::shared_ptr<grpc::Channel> make_hook_channel(const HookSpec& spec) {
  grpc::ChannelArguments args;
  // A hook server that comes up (or back) later is used within about a
  // second, not after gRPC's default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Despite its name, gRPC reads this as the least time one connection
  // attempt (connect plus HTTP/2 handshake) is given: the connect timeout.
  // It does not delay a retry after a refused connect.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, clamp_int(std::max<long long>(spec.connect_timeout.count(), 100)));
  // A hook server that hangs with the connection open is noticed between
  // calls too, not by the next call's timeout.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetMaxReceiveMessageSize(clamp_int(static_cast<long long>(spec.max_reply_bytes)));
  args.SetInt(GRPC_ARG_ENABLE_CHANNELZ, 0);
  // Each hook has its own connection and backoff: two hooks on one socket,
  // or a hook made again for the same socket, never share a subchannel
  // that is waiting out a backoff.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel("unix:" + spec.socket, grpc::InsecureChannelCredentials(), args);
}

std::chrono::system_clock::time_point to_system(Clock::time_point t) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(t - Clock::now());
}

std::string manifest_phases(const hookpb::HookManifest& m) {
  std::string out;
  for (const auto& p : m.phases()) out += (out.empty() ? "" : ", ") + p;
  return out.empty() ? "none" : out;
}

// The hook's own queue, for the work no call's queue carries (Describe, its
// retry alarm, invocations without a caller queue: after-phases). Its
// thread waits in Next only while such work is in flight. A thread parked
// in Next on a queue takes part in gRPC's process-wide polling (epoll1 has
// one epoll set for every socket): it picked up the gateway's, the
// delegate's and the hook's bytes meant for a call's queue and then woke
// that queue's thread, about +200 us of wrapper CPU per create with one
// grpc hook (docs/performance.md). A queue that does not poll is no way
// out: gRPC 1.51 aborts when a client call on one waits for a connection.
class OwnQueue {
 public:
  grpc::CompletionQueue* get() { return &cq_; }
  // Before every operation started on the queue: one event will come back.
  void expect() {
    std::lock_guard lock(mu_);
    pending_++;
    cv_.notify_one();
  }
  void shutdown() {
    std::lock_guard lock(mu_);
    shut_down_ = true;
    cq_.Shutdown();
    cv_.notify_one();
  }
  // The thread's loop, until the queue is shut down and drained.
  void run() {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return pending_ > 0 || shut_down_; });
      }
      void* tag = nullptr;
      bool ok = false;
      if (!cq_.Next(&tag, &ok)) return;
      static_cast<CompletionTag*>(tag)->proceed(ok);
      std::lock_guard lock(mu_);
      pending_--;
    }
  }

 private:
  grpc::CompletionQueue cq_;
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;
  bool shut_down_ = false;
};

}  // namespace

// What the hook shares with its invocations in flight, which may outlive
// the hook on a foreign queue: the channel, the own queue, the Describe
// state. `mu` orders every operation started on `cq` before its Shutdown.
struct GrpcHook::Core {
  explicit Core(const HookSpec& spec)
      : name(spec.name),
        socket(spec.socket),
        configured(spec.phases),
        timeout(spec.timeout),
        max_reply_bytes(spec.max_reply_bytes),
        channel(make_hook_channel(spec)),
        stub(hookpb::LifecycleHook::NewStub(channel)) {}

  // Describe, on the own queue: one attempt, then a retry alarm, until the
  // hook answers or the hook stops.
  void describe_async();
  void on_describe_done(bool ok);
  void on_retry(bool ok);
  grpc::Status record_manifest(const hookpb::HookManifest& m);
  void record_describe_failure(const std::string& message, grpc::StatusCode code);
  // A failed call as the chain reports it (without the hook's name).
  std::string failure_message(const grpc::Status& s, bool cancelled, milliseconds budget) const;
  void forget(Invocation* inv) {
    std::lock_guard lock(mu);
    in_flight.erase(inv);
  }

  const std::string name;
  const std::string socket;
  const PhaseSet configured;
  const milliseconds timeout;
  const size_t max_reply_bytes;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<hookpb::LifecycleHook::Stub> stub;
  OwnQueue own;
  // `done` callbacks running now: stop() waits for them to return.
  std::atomic<int> dones_running{0};

  mutable std::mutex mu;
  bool started = false;
  bool stopping = false;
  std::unordered_map<Invocation*, std::weak_ptr<Invocation>> in_flight;
  std::optional<hookpb::HookManifest> manifest;
  PhaseSet implemented;
  std::optional<grpc::Status> problem;
  std::string describe_error = "Describe has not been called yet";
  std::optional<grpc::StatusCode> logged_failure;  // the last Describe failure logged
  std::unique_ptr<grpc::ClientContext> describe_ctx;
  std::unique_ptr<grpc::ClientAsyncResponseReader<hookpb::HookManifest>> describe_reader;
  hookpb::HookManifest describe_reply;
  grpc::Status describe_status;
  std::unique_ptr<grpc::Alarm> retry_alarm;
  milliseconds retry_delay = kFirstDescribeRetry;
  BoundTag<Core> describe_tag{this, &Core::on_describe_done};
  BoundTag<Core> retry_tag{this, &Core::on_retry};
};

// One Invoke call. Owns itself (`self_`) from Finish until its tag comes
// back; `done` runs once, from whichever of the tag, a cancelled start or
// stop() claims it first.
class GrpcHook::Invocation final : public CompletionTag, public std::enable_shared_from_this<Invocation> {
 public:
  Invocation(std::shared_ptr<Core> core, std::shared_ptr<const hookpb::HookRequest> request, HookDone done,
             Clock::time_point deadline)
      : core_(std::move(core)),
        request_(std::move(request)),
        done_(std::move(done)),
        deadline_(deadline),
        budget_(std::chrono::round<milliseconds>(deadline - Clock::now())) {}

  // With core_->mu held, so a queue is never shut down between the check
  // that the hook runs and the start of the call.
  void start_locked(grpc::CompletionQueue* cq) {
    ctx_.set_deadline(to_system(deadline_));
    reader_ = core_->stub->PrepareAsyncInvoke(&ctx_, *request_, cq);
    reader_->StartCall();
    self_ = shared_from_this();
    reader_->Finish(&response_, &status_, this);
  }

  // Any thread. The Finish tag then comes back promptly with CANCELLED.
  void cancel() {
    cancelled_.store(true);
    ctx_.TryCancel();
  }

  void proceed(bool) override {
    std::shared_ptr<Invocation> keep = std::move(self_);
    if (status_.ok()) {
      end(HookOutcome::answered(std::move(response_)));
    } else {
      end(HookOutcome::failed(status_.error_code(), core_->failure_message(status_, cancelled_.load(), budget_)));
    }
    core_->forget(this);
  }

  void end(HookOutcome outcome) {
    core_->dones_running.fetch_add(1);
    if (!claimed_.exchange(true)) {
      HookDone done = std::move(done_);
      done(std::move(outcome));
    }
    core_->dones_running.fetch_sub(1);
  }

 private:
  std::shared_ptr<Core> core_;
  std::shared_ptr<const hookpb::HookRequest> request_;
  HookDone done_;
  Clock::time_point deadline_;
  milliseconds budget_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<hookpb::HookResponse>> reader_;
  hookpb::HookResponse response_;
  grpc::Status status_;
  std::shared_ptr<Invocation> self_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> claimed_{false};
};

void GrpcHook::Core::describe_async() {
  std::lock_guard lock(mu);
  if (stopping || manifest) return;
  describe_ctx = std::make_unique<grpc::ClientContext>();
  describe_ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  hookpb::DescribeRequest request;
  request.set_hook(name);
  request.set_protocol_version(kHookProtocolVersion);
  describe_reply.Clear();
  own.expect();
  describe_reader = stub->PrepareAsyncDescribe(describe_ctx.get(), request, own.get());
  describe_reader->StartCall();
  describe_reader->Finish(&describe_reply, &describe_status, &describe_tag);
}

void GrpcHook::Core::on_describe_done(bool) {
  grpc::Status s;
  hookpb::HookManifest reply;
  {
    std::lock_guard lock(mu);
    s = describe_status;
    reply = describe_reply;
    describe_reader.reset();
    describe_ctx.reset();
  }
  if (s.ok()) {
    record_manifest(reply);
    return;
  }
  record_describe_failure(failure_message(s, false, timeout), s.error_code());
  std::lock_guard lock(mu);
  if (stopping || manifest) return;
  retry_alarm = std::make_unique<grpc::Alarm>();
  own.expect();
  retry_alarm->Set(own.get(), std::chrono::system_clock::now() + retry_delay, &retry_tag);
  retry_delay = std::min(retry_delay * 2, kMaxDescribeRetry);
}

void GrpcHook::Core::on_retry(bool ok) {
  if (ok) describe_async();  // not ok: cancelled by stop()
}

grpc::Status GrpcHook::Core::record_manifest(const hookpb::HookManifest& m) {
  PhaseSet phases;
  for (const auto& p : m.phases()) {
    // A phase this build does not know is one a newer wrapper may call.
    if (auto phase = phase_from_name(p)) phases.set(static_cast<size_t>(*phase));
  }
  std::optional<grpc::Status> prob;
  if (m.protocol_version() != kHookProtocolVersion) {
    prob = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "speaks hook protocol version " + std::to_string(m.protocol_version()) +
                            ", this wrapper speaks version " + std::to_string(kHookProtocolVersion));
  } else if (PhaseSet missing = configured & ~phases; missing.any()) {
    prob = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "does not implement the configured phases " +
                                                                   phase_list(missing) +
                                                                   " (its Describe lists: " + manifest_phases(m) + ")");
  }
  bool changed;
  {
    std::lock_guard lock(mu);
    changed = !manifest || manifest->SerializeAsString() != m.SerializeAsString();
    manifest = m;
    implemented = phases;
    problem = prob;
  }
  if (!changed) return prob.value_or(grpc::Status::OK);
  nlohmann::json fields = {{"hook", name},
                           {"socket", socket},
                           {"manifest_name", m.name()},
                           {"phases", manifest_phases(m)},
                           {"protocol_version", m.protocol_version()}};
  if (prob) {
    fields["error"] = prob->error_message();
    fields["configured_phases"] = phase_list(configured);
    log_error("grpc hook's manifest does not fit its configuration; every invocation fails", fields);
  } else {
    log_info("grpc hook answered Describe", fields);
  }
  return prob.value_or(grpc::Status::OK);
}

void GrpcHook::Core::record_describe_failure(const std::string& message, grpc::StatusCode code) {
  bool log = false;
  {
    std::lock_guard lock(mu);
    if (manifest) return;
    describe_error = "Describe has not answered: " + message;
    log = logged_failure != code;
    logged_failure = code;
  }
  if (log) {
    log_warn("grpc hook does not answer Describe yet; retrying with backoff",
             {{"hook", name}, {"socket", socket}, {"error", message}});
  }
}

std::string GrpcHook::Core::failure_message(const grpc::Status& s, bool cancelled, milliseconds budget) const {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return "is not reachable at " + socket + ": " + s.error_message();
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "did not answer within " + std::to_string(std::max<long long>(budget.count(), 0)) + " ms";
    case grpc::StatusCode::CANCELLED:
      if (cancelled) return "was cancelled";
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      // gRPC's own refusal of an oversized message, not the hook's answer.
      if (s.error_message().find("larger than max") != std::string::npos) {
        return "sent a reply larger than max_reply_bytes (" + std::to_string(max_reply_bytes) +
               " bytes): " + s.error_message();
      }
      break;
    default:
      break;
  }
  return "answered " + std::string(status_code_name(s.error_code())) + ": " + s.error_message();
}

GrpcHook::GrpcHook(const HookSpec& spec) : Hook(spec.name), core_(std::make_shared<Core>(spec)) {
  poller_ = std::thread([core = core_] {
    // "hook:<name>" in top -H and /proc (15 characters at most).
    pthread_setname_np(pthread_self(), ("hook:" + core->name).substr(0, 15).c_str());
    core->own.run();
  });
}

GrpcHook::~GrpcHook() {
  stop();
}

const std::string& GrpcHook::socket() const {
  return core_->socket;
}

void GrpcHook::start() {
  {
    std::lock_guard lock(core_->mu);
    if (core_->started || core_->stopping) return;
    core_->started = true;
  }
  core_->describe_async();
}

void GrpcHook::invoke(std::shared_ptr<const hookpb::HookRequest> request, const InvokeOptions& options, HookDone done) {
  auto now = Clock::now();
  // The chain's deadline is already the least of several; the hook's own
  // timeout still bounds a caller that passed none.
  auto deadline = now + core_->timeout;
  if (options.deadline != Clock::time_point{}) deadline = std::min(deadline, options.deadline);
  auto inv = std::make_shared<Invocation>(core_, std::move(request), std::move(done), deadline);
  if (options.cancel && options.cancel->cancelled()) {
    return inv->end(HookOutcome::failed(grpc::StatusCode::CANCELLED, "was cancelled"));
  }
  {
    std::unique_lock lock(core_->mu);
    if (core_->stopping) {
      lock.unlock();
      return inv->end(HookOutcome::failed(grpc::StatusCode::UNAVAILABLE, "is stopped"));
    }
    if (core_->problem) {
      grpc::Status p = *core_->problem;
      lock.unlock();
      return inv->end(HookOutcome::failed(p.error_code(), p.error_message()));
    }
    core_->in_flight.emplace(inv.get(), inv);
    if (options.cq == nullptr) core_->own.expect();
    inv->start_locked(options.cq != nullptr ? options.cq : core_->own.get());
  }
  if (options.cancel) {
    options.cancel->on_cancel([weak = std::weak_ptr<Invocation>(inv)] {
      if (auto i = weak.lock()) i->cancel();
    });
  }
}

void GrpcHook::stop() {
  if (stopped_) return;
  stopped_ = true;
  std::vector<std::shared_ptr<Invocation>> live;
  {
    std::lock_guard lock(core_->mu);
    core_->stopping = true;
    for (auto& [raw, weak] : core_->in_flight) {
      if (auto inv = weak.lock()) live.push_back(std::move(inv));
    }
    if (core_->describe_ctx) core_->describe_ctx->TryCancel();
    if (core_->retry_alarm) core_->retry_alarm->Cancel();
  }
  // `done` runs here for calls on a foreign queue too, whose tags that
  // queue's poller still has to hand back (see the lifetime rule).
  for (auto& inv : live) {
    inv->end(HookOutcome::failed(grpc::StatusCode::CANCELLED, "was cancelled: the hook is stopping"));
    inv->cancel();
  }
  live.clear();
  core_->own.shutdown();
  if (poller_.joinable()) poller_.join();
  // A `done` claimed by a foreign poller just before we looked.
  while (core_->dones_running.load() > 0) std::this_thread::sleep_for(milliseconds(1));
}

std::optional<PhaseSet> GrpcHook::implemented_phases() const {
  std::lock_guard lock(core_->mu);
  if (!core_->manifest) return std::nullopt;
  return core_->implemented;
}

nlohmann::json GrpcHook::describe() const {
  std::lock_guard lock(core_->mu);
  if (!core_->manifest) return {{"error", core_->describe_error}};
  const auto& m = *core_->manifest;
  nlohmann::json out = {{"name", m.name()},
                        {"phases", std::vector<std::string>(m.phases().begin(), m.phases().end())},
                        {"failure_policy", m.failure_policy()},
                        {"request_config_key", m.request_config_key()},
                        {"protocol_version", m.protocol_version()}};
  if (core_->problem) out["problem"] = core_->problem->error_message();
  return out;
}

std::optional<grpc::Status> GrpcHook::describe_problem() const {
  std::lock_guard lock(core_->mu);
  return core_->problem;
}

bool GrpcHook::described() const {
  std::lock_guard lock(core_->mu);
  return core_->manifest.has_value();
}

grpc::Status GrpcHook::describe_now(milliseconds timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  hookpb::DescribeRequest request;
  request.set_hook(name());
  request.set_protocol_version(kHookProtocolVersion);
  hookpb::HookManifest reply;
  grpc::Status s = core_->stub->Describe(&ctx, request, &reply);
  if (s.ok()) return core_->record_manifest(reply);
  std::string message = core_->failure_message(s, false, timeout);
  core_->record_describe_failure(message, s.error_code());
  return grpc::Status(s.error_code(), message);
}

}  // namespace owrap
