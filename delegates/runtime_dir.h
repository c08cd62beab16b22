// The managed delegate's private runtime directory (0700, made by mkdtemp)
// that holds its socket. It is locked (flock) while in use, so a wrapper
// starting later can tell a stale directory (its wrapper was SIGKILLed) from
// one another wrapper of the same name still uses, and remove only the
// former. Removed on destruction.
#pragma once

#include "common/result.h"
#include "common/uds.h"

#include <memory>
#include <string>

namespace owrap {

class RuntimeDir {
 public:
  // Under `parent` (created 0700 if missing; an existing one must be a real
  // directory, owned by our euid or sticky such as /tmp, and is never
  // chmodded), named .<wrapper_name>-delegate-XXXXXX; in /tmp instead when a
  // socket named `socket_name` there would exceed the Unix socket path limit.
  static Result<std::unique_ptr<RuntimeDir>> create(const std::string& parent, const std::string& wrapper_name,
                                                    const std::string& socket_name);
  ~RuntimeDir();
  RuntimeDir(const RuntimeDir&) = delete;
  RuntimeDir& operator=(const RuntimeDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  RuntimeDir(std::string path, UniqueFd lock) : path_(std::move(path)), lock_(std::move(lock)) {}
  std::string path_;
  UniqueFd lock_;
};

// Requirements for a runtime parent directory (see RuntimeDir::create).
Result<bool> prepare_runtime_parent(const std::string& dir);

// Removes `parent`/.<wrapper_name>-delegate-* directories that are ours,
// unlocked, and hold no socket that still answers. Returns how many.
int remove_stale_runtime_dirs(const std::string& parent, const std::string& wrapper_name);

}  // namespace owrap
