// Kubernetes resource quantities ("500m", "2", "4Gi", "512Mi", "1G",
// "1.5", "1e3"), parsed exactly: the value is held in nano-units, the
// finest precision Kubernetes keeps (finer values round up, as there).
#pragma once

#include "common/result.h"

#include <string_view>

namespace owrap {

struct Quantity {
  unsigned __int128 nanos = 0;
  friend auto operator<=>(const Quantity&, const Quantity&) = default;
};

// Error says why: "not a Kubernetes quantity (...)", "must not be
// negative", "is too large".
Result<Quantity> parse_quantity(std::string_view text);

}  // namespace owrap
