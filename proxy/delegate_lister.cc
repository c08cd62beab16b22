#include "proxy/delegate_lister.h"

#include "common/completion_tag.h"
#include "common/grpc_util.h"
#include "compute_driver.grpc.pb.h"

namespace owrap {

namespace v1 = openshell::compute::v1;

class DelegateLister::Call {
 public:
  Call(DelegateLister& owner, HookEnvironment::ListDone done) : owner_(owner), done_(std::move(done)) {}

  void start(grpc::CompletionQueue* cq, std::chrono::steady_clock::time_point deadline) {
    auto left = std::min<std::chrono::steady_clock::duration>(deadline - std::chrono::steady_clock::now(),
                                                              std::chrono::seconds(30));
    ctx_.set_deadline(std::chrono::system_clock::now() + left);
    ctx_.AddMetadata(std::string(kHopsMetadata), "1");
    stub_ = v1::ComputeDriver::NewStub(owner_.delegate_.channel());
    reader_ = stub_->PrepareAsyncListSandboxes(&ctx_, request_, cq);
    reader_->StartCall();
    reader_->Finish(&response_, &status_, &tag_);
  }
  void cancel() { ctx_.TryCancel(); }

 private:
  // A reply that does not parse completes with ok=false and an OK status:
  // it must never be read as "no sandboxes".
  void on_done(bool ok) {
    grpc::Status s = status_;
    if (!ok && s.ok()) {
      s = unparsable_reply_status(owner_.delegate_, "ListSandboxes",
                                  v1::ListSandboxesResponse::descriptor()->full_name());
    }
    std::vector<v1::DriverSandbox> all;
    if (s.ok()) {
      all.reserve(response_.sandboxes_size());
      for (auto& sb : *response_.mutable_sandboxes()) all.push_back(std::move(sb));
    }
    owner_.forget(this);
    auto done = std::move(done_);
    delete this;
    done(std::move(s), std::move(all));
  }

  DelegateLister& owner_;
  HookEnvironment::ListDone done_;
  grpc::ClientContext ctx_;
  v1::ListSandboxesRequest request_;
  v1::ListSandboxesResponse response_;
  grpc::Status status_;
  std::unique_ptr<v1::ComputeDriver::Stub> stub_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ListSandboxesResponse>> reader_;
  BoundTag<Call> tag_{this, &Call::on_done};
};

void DelegateLister::list(std::chrono::steady_clock::time_point deadline, HookEnvironment::ListDone done) {
  std::unique_lock lock(mu_);
  if (stopped_ || queues_.queues().empty()) {
    lock.unlock();
    return done(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the wrapper is not serving"), {});
  }
  auto* call = new Call(*this, std::move(done));
  live_.insert(call);
  // Started under the lock: cancel_all() never sees a call half started,
  // and the queues are not shut down meanwhile.
  call->start(queues_.any(), deadline);
}

void DelegateLister::cancel_all() {
  std::lock_guard lock(mu_);
  stopped_ = true;
  for (Call* call : live_) call->cancel();
}

void DelegateLister::forget(Call* call) {
  std::lock_guard lock(mu_);
  live_.erase(call);
}

}  // namespace owrap
