#include "proxy/pipeline.h"

namespace owrap {

void Pipeline::add(Stage stage) {
  stages_.push_back(std::make_unique<Stage>(std::move(stage)));
  const Stage* added = stages_.back().get();
  for (size_t i = 0; i < kRpcCount; i++) {
    if (added->rpcs.test(i)) by_rpc_[i].push_back(added);
  }
}

}  // namespace owrap
