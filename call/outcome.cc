#include "call/outcome.h"

namespace owrap {

std::string_view outcome_name(DelegateOutcome outcome) {
  switch (outcome) {
    case DelegateOutcome::kNotCalled:
      return "not_called";
    case DelegateOutcome::kCommitted:
      return "committed";
    case DelegateOutcome::kFailed:
      return "failed";
    case DelegateOutcome::kInDoubt:
      return "in_doubt";
  }
  return "in_doubt";
}

DelegateOutcome classify_delegate_answer(const grpc::Status& status, bool may_have_reached) {
  using grpc::StatusCode;
  switch (status.error_code()) {
    case StatusCode::OK:
      return DelegateOutcome::kCommitted;
    // The delegate looked at the request and refused it.
    case StatusCode::INVALID_ARGUMENT:
    case StatusCode::FAILED_PRECONDITION:
    case StatusCode::ALREADY_EXISTS:
    case StatusCode::NOT_FOUND:
    case StatusCode::RESOURCE_EXHAUSTED:
    case StatusCode::PERMISSION_DENIED:
    case StatusCode::UNAUTHENTICATED:
    case StatusCode::UNIMPLEMENTED:
    case StatusCode::OUT_OF_RANGE:
    case StatusCode::ABORTED:
      return DelegateOutcome::kFailed;
    case StatusCode::UNAVAILABLE:
      return may_have_reached ? DelegateOutcome::kInDoubt : DelegateOutcome::kFailed;
    // Time ran out, the call was cut, or something broke on the way back:
    // the base may have done it. Never guess: clean up.
    default:
      return DelegateOutcome::kInDoubt;
  }
}

}  // namespace owrap
