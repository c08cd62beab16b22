#pragma once

#include "delegates/delegate.h"

namespace owrap {

// A driver somebody else runs, reached at `endpoint`.
class EndpointDelegate final : public Delegate {
 public:
  explicit EndpointDelegate(DelegateOptions options);
  const std::string& name() const override { return options_.name; }
  std::shared_ptr<grpc::Channel> channel() const override { return channel_; }
  std::string socket_path() const override;
  bool available() const override { return true; }
  std::string unavailable_reason() const override { return {}; }
  Result<bool> start(const std::function<bool()>& cancelled) override;
  void stop(std::chrono::milliseconds) override {}

 private:
  DelegateOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace owrap
