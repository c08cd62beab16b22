// `openshell-driver-wrapper ctl`: a client for ANY compute-driver socket, as
// crictl is for CRI. JSON in and out with the proto field names.
#pragma once

#include <string>
#include <vector>

namespace owrap {

int run_ctl(const std::vector<std::string>& args);

}  // namespace owrap
