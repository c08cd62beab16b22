// An Asio io_context run by one thread of its own (timers, exec hooks'
// pipes and pidfds, the watch hub), from construction until stop().
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <optional>
#include <thread>

namespace owrap {

class IoThread {
 public:
  IoThread() : work_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}
  ~IoThread() { stop(); }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  boost::asio::io_context& io() { return io_; }

  // Stops the loop (handlers not yet run are dropped) and joins its thread.
  // Idempotent; never call it from the loop's own thread.
  void stop() {
    if (!thread_.joinable()) return;
    work_.reset();
    io_.stop();
    thread_.join();
  }

 private:
  // One thread runs it: a handler posted from that thread then goes to the
  // thread's own queue instead of waking the reactor (an epoll_ctl per post;
  // two per call for the frame relay). Locking stays on: other threads post.
  boost::asio::io_context io_{1};
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
};

}  // namespace owrap
