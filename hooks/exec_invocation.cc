#include "hooks/exec_invocation.h"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <fcntl.h>

#include <csignal>
#include <utility>

namespace owrap {

namespace asio = boost::asio;

namespace {
// Without a pidfd (kernels before 5.3), how often a running process is
// looked at.
constexpr auto kExitPoll = std::chrono::milliseconds(20);
// After the process exited and its group was killed, how long its pipes may
// stay open: only a helper that left the group (setsid) holds them then, and
// it must not hold the answer.
constexpr auto kPipeGrace = std::chrono::milliseconds(200);
constexpr size_t kChunk = 16384;
}  // namespace

ExecInvocation::ExecInvocation(asio::io_context& io, std::shared_ptr<const ExecHookConfig> config,
                               std::string request_json, std::map<std::string, std::string> env,
                               Clock::time_point deadline, HookDone done)
    : config_(std::move(config)),
      request_(std::move(request_json)),
      env_(std::move(env)),
      started_(Clock::now()),
      deadline_(deadline),
      done_(std::move(done)),
      in_(io),
      out_(io),
      err_(io),
      exit_(io),
      deadline_timer_(io),
      exit_timer_(io),
      stderr_(config_->hook) {}

void ExecInvocation::watch(CancelSignal& cancel) {
  deadline_timer_.expires_at(deadline_);
  deadline_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->on_deadline();
  });
  // The signal may outlive us, and runs this on the canceller's thread.
  cancel.on_cancel([weak = weak_from_this(), io = in_.get_executor()] {
    asio::post(io, [weak] {
      if (auto self = weak.lock()) self->abort(grpc::StatusCode::CANCELLED, "cancelled by the caller");
    });
  });
}

std::string ExecInvocation::budget_text() const {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - started_).count();
  return std::to_string(ms < 0 ? 0 : ms) + " ms";
}

void ExecInvocation::on_deadline() {
  if (finished()) return;
  if (!running_) {
    abort(grpc::StatusCode::DEADLINE_EXCEEDED, "did not start within " + budget_text() + ": " +
                                                   std::to_string(config_->max_in_flight) +
                                                   " processes of this hook (max_in_flight) were still running");
    return;
  }
  abort(grpc::StatusCode::DEADLINE_EXCEEDED, "did not answer within " + budget_text());
}

void ExecInvocation::run(std::function<void()> released) {
  released_ = std::move(released);
  if (Clock::now() >= deadline_) {
    finish(HookOutcome::failed(grpc::StatusCode::DEADLINE_EXCEEDED,
                               "did not start: its deadline (" + budget_text() + ") had passed"));
    release_later();
    return;
  }
  running_ = true;
  std::map<std::string, std::string> env = std::move(env_);
  auto spawned = ChildProcess::spawn(config_->command, env, SpawnOptions{.stdin_pipe = true});
  if (!spawned) {
    finish(HookOutcome::failed(grpc::StatusCode::UNAVAILABLE, "could not start: " + spawned.error()));
    release_later();
    return;
  }
  child_ = std::move(spawned.value());
  out_chunk_.resize(kChunk);
  err_chunk_.resize(kChunk);
  if (!adopt(in_, child_->take_stdin()) || !adopt(out_, child_->take_stdout()) || !adopt(err_, child_->take_stderr())) {
    abort(grpc::StatusCode::INTERNAL, "cannot watch the process's pipes");
  } else {
    write_request();
    read_stdout();
    read_stderr();
  }
  wait_exit();
}

bool ExecInvocation::adopt(Descriptor& descriptor, UniqueFd fd) {
  boost::system::error_code ec;
  descriptor.assign(fd.get(), ec);
  if (ec) return false;
  fd.release();
  return true;
}

void ExecInvocation::release_later() {
  // Not from here: the scheduler would start the next invocation, which may
  // end at once the same way, and so on down the stack.
  asio::post(in_.get_executor(), [self = shared_from_this()] {
    if (auto released = std::exchange(self->released_, nullptr)) released();
  });
}

void ExecInvocation::write_request() {
  asio::async_write(in_, asio::buffer(request_), [self = shared_from_this()](const boost::system::error_code&, size_t) {
    // A hook that exits without reading its request is not an error by
    // itself (EPIPE): its exit status and reply say how it went.
    boost::system::error_code ignored;
    self->in_.close(ignored);
    self->request_.clear();
    self->request_.shrink_to_fit();
  });
}

void ExecInvocation::read_stdout() {
  out_.async_read_some(
      asio::buffer(out_chunk_), [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
        if (self->finished()) return;
        self->stdout_.append(self->out_chunk_.data(), n);
        if (self->stdout_.size() > self->config_->max_reply_bytes) {
          self->abort(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      "printed more than " + std::to_string(self->config_->max_reply_bytes) + " bytes on stdout");
          return;
        }
        if (ec) {
          self->out_eof_ = true;
          self->try_complete();
          return;
        }
        self->read_stdout();
      });
}

void ExecInvocation::read_stderr() {
  err_.async_read_some(asio::buffer(err_chunk_),
                       [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                         if (self->finished()) return;
                         self->stderr_.append(std::string_view(self->err_chunk_.data(), n));
                         if (ec) {
                           self->err_eof_ = true;
                           self->try_complete();
                           return;
                         }
                         self->read_stderr();
                       });
}

void ExecInvocation::wait_exit() {
  if (child_->pidfd() < 0) {
    poll_exit();
    return;
  }
  // A descriptor of our own: the child keeps its pidfd for itself.
  if (!adopt(exit_, UniqueFd(::fcntl(child_->pidfd(), F_DUPFD_CLOEXEC, 0)))) {
    poll_exit();
    return;
  }
  exit_.async_wait(Descriptor::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->on_exited();
  });
}

void ExecInvocation::poll_exit() {
  exit_timer_.expires_after(kExitPoll);
  exit_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || !self->child_) return;
    if (self->child_->exited())
      self->on_exited();
    else
      self->poll_exit();
  });
}

void ExecInvocation::on_exited() {
  if (exited_) return;
  exited_ = true;
  // The leader is a zombie until reaped, so its pid still names only our
  // group: whatever the hook left running there goes with it, and its pipes
  // close.
  child_->signal(SIGKILL);
  ExitInfo exit = child_->reap();
  boost::system::error_code ignored;
  exit_.close(ignored);
  if (auto released = std::exchange(released_, nullptr)) released();
  if (finished()) return;
  exit_info_ = exit;
  exit_timer_.expires_after(kPipeGrace);
  exit_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->finished()) return;
    self->out_eof_ = self->err_eof_ = true;
    self->try_complete();
  });
  try_complete();
}

void ExecInvocation::try_complete() {
  if (finished() || !exited_ || !out_eof_ || !err_eof_) return;
  stderr_.finish();
  finish(judge_exec_reply(exit_info_, stdout_, stderr_.last_line()));
}

void ExecInvocation::abort(grpc::StatusCode code, const std::string& message) {
  if (finished()) return;
  // Killed before it is reaped, so the group is still ours; the pidfd wait
  // reaps it and frees the slot.
  if (child_ && !exited_) child_->signal(SIGKILL);
  finish(HookOutcome::failed(code, message));
}

void ExecInvocation::abort_and_reap(const std::string& message) {
  abort(grpc::StatusCode::CANCELLED, message);
  if (child_ && !exited_) {
    exited_ = true;
    child_->reap();  // SIGKILLed just now: prompt
  }
  boost::system::error_code ignored;
  exit_.close(ignored);
  exit_timer_.cancel();
  released_ = nullptr;
}

void ExecInvocation::close_pipes() {
  boost::system::error_code ignored;
  in_.close(ignored);
  out_.close(ignored);
  err_.close(ignored);
}

void ExecInvocation::finish(HookOutcome outcome) {
  if (finished()) return;
  HookDone done = std::move(done_);
  done_ = nullptr;
  deadline_timer_.cancel();
  if (exited_) exit_timer_.cancel();  // the pipe grace; polling must go on until reaped otherwise
  close_pipes();
  if (!exited_) stderr_.finish();
  stdout_.clear();
  stdout_.shrink_to_fit();
  done(std::move(outcome));
}

}  // namespace owrap
