// Unix-socket serving with the upstream drivers' guarding, and one better: a
// socket that a live server still answers on is never stolen.
//
//  * the parent directory is created if missing, must be a real directory
//    (not a symlink) owned by our euid, and is chmod 0700;
//  * an existing owned socket nobody answers on is removed; anything else at
//    the path is refused;
//  * the socket is chmod 0600 and removed on destruction, if it is still ours;
//  * every accepted connection's SO_PEERCRED uid must equal our euid.
#pragma once

#include "common/result.h"

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace grpc {
class Server;
}

namespace owrap {

// An fd closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Why `path` cannot be a Unix socket path (empty when it can): it must be
// absolute, without NUL bytes, and at most 107 bytes.
std::string socket_path_error(const std::string& path);

// Creates each missing component of `dir` with mode 0700; never changes a
// directory that exists.
Result<bool> create_missing_dirs(const std::string& dir);

// Creates (if missing, then mode 0700) or accepts a private directory: real,
// owned by euid, writable by nobody else. Never changes an existing
// directory's mode.
Result<bool> ensure_private_dir(const std::string& dir);

// A bound, listening Unix socket file, removed on destruction.
class GuardedSocket {
 public:
  static Result<std::unique_ptr<GuardedSocket>> bind(const std::string& path);
  // Every check bind() makes that needs no change on disk (path, directory,
  // a live server on the path), so a doomed start fails before anything is
  // launched.
  static Result<bool> check(const std::string& path);
  ~GuardedSocket();
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // Stops listening but leaves the file (used between stop-accepting and exit).
  void close_listener() { fd_.reset(); }

 private:
  GuardedSocket(std::string path, UniqueFd fd, dev_t dev, ino_t ino)
      : path_(std::move(path)), fd_(std::move(fd)), dev_(dev), ino_(ino) {}
  std::string path_;
  UniqueFd fd_;
  dev_t dev_;
  ino_t ino_;
};

// Accepts connections on a GuardedSocket, checks the peer's uid and hands
// accepted fds on: to a grpc::Server that has no listening ports of its
// own, or to `handoff` (the wrapper's frame relay). Called on the accept
// thread; the fd is non-blocking.
using ConnectionHandoff = std::function<void(UniqueFd)>;
class PeerCheckedAcceptor {
 public:
  PeerCheckedAcceptor(GuardedSocket& socket, grpc::Server* server, std::string who, ConnectionHandoff handoff = {});
  ~PeerCheckedAcceptor();
  void start();
  void stop();  // idempotent; returns once the accept thread has exited
  uint64_t refused() const { return refused_.load(); }

 private:
  void run();
  GuardedSocket& socket_;
  grpc::Server* server_;
  std::string who_;
  ConnectionHandoff handoff_;
  UniqueFd wake_;
  std::thread thread_;
  std::atomic<uint64_t> refused_{0};
  std::atomic<bool> stopping_{false};
};

// A connected Unix stream socket (close-on-exec; non-blocking when asked:
// a Unix socket connects at once or not at all, EAGAIN when its backlog is
// full), or why not.
Result<UniqueFd> connect_unix(const std::string& path, bool nonblocking);
// Connects to a Unix socket and reports whether something accepts there.
bool socket_answers(const std::string& path);

}  // namespace owrap
