#include "common/watcher_registry.h"

#include "common/log.h"

namespace owrap {

grpc::Status watcher_fell_behind(size_t queue_capacity, const std::string& peer) {
  log_warn("ending a watcher that fell behind",
           {{"rpc", "WatchSandboxes"}, {"queue_capacity", queue_capacity}, {"peer", peer}});
  return grpc::Status(
      grpc::StatusCode::RESOURCE_EXHAUSTED,
      "watcher fell behind: more than " + std::to_string(queue_capacity) + " events queued; reopen the watch");
}

}  // namespace owrap
