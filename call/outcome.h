// What a delegate's answer means for everything that follows it (rollback of
// what stages acquired, the journal): the base did the work, it definitely
// did not, or it may have. docs/architecture.md has the table.
#pragma once

#include <grpcpp/support/status.h>

#include <string_view>

namespace owrap {

enum class DelegateOutcome {
  kNotCalled,  // a stage refused or failed before the delegate was called
  kCommitted,  // OK
  kFailed,     // a definite refusal: the base did nothing
  kInDoubt,    // the base may have done the work
};

std::string_view outcome_name(DelegateOutcome outcome);

// `may_have_reached` is false when the request certainly never reached the
// delegate (it was down, or its connection never came up): UNAVAILABLE is
// then a definite failure; after that, it is in doubt.
DelegateOutcome classify_delegate_answer(const grpc::Status& status, bool may_have_reached);

}  // namespace owrap
