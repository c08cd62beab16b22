// The wrapper's ordered stages, selected per RPC once at start-up. Stages
// are call/stage.h data; call/call_runner.h drives them around the delegate
// call. Adding the hook chain and the journal means adding stages here.
#pragma once

#include "call/stage.h"

#include <array>
#include <vector>

namespace owrap {

class Pipeline {
 public:
  void add(Stage stage);
  // The stages that apply to `rpc`, in configuration order. Valid for the
  // pipeline's lifetime; add() must not be called once calls are served.
  const std::vector<const Stage*>& for_rpc(Rpc rpc) const { return by_rpc_[static_cast<size_t>(rpc)]; }
  size_t stage_count(Rpc rpc) const { return for_rpc(rpc).size(); }

 private:
  // Stable addresses: stages are referenced by every call.
  std::vector<std::unique_ptr<Stage>> stages_;
  std::array<std::vector<const Stage*>, kRpcCount> by_rpc_;
};

}  // namespace owrap
