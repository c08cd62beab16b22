// Templates in the defaults hook's string values: "{sandbox.id}",
// "{sandbox.name}", "{sandbox.namespace}", "{template.image}",
// "{labels.<key>}"; "{{" and "}}" are literal braces. Checked at start (an
// unknown variable is a configuration error); a variable the sandbox does
// not set is an error at call time, never an empty string.
#pragma once

#include "common/result.h"
#include "compute_driver.pb.h"

#include <optional>
#include <string>
#include <string_view>

namespace owrap {

// Why `text` is not a valid template, or nullopt when it is.
std::optional<std::string> check_template(std::string_view text);

// The sandbox's value of one variable ("labels.team"); nullopt when unset
// or empty.
std::optional<std::string> template_variable(const openshell::compute::v1::DriverSandbox& sandbox,
                                             std::string_view name);

// `text` with every variable replaced. Error: "template variable
// {labels.team} is not set on this sandbox" (or the check_template error).
Result<std::string> expand_template(std::string_view text, const openshell::compute::v1::DriverSandbox& sandbox);

}  // namespace owrap
