// [delegate]: the delegates component reads its own table of the wrapper's
// configuration (docs/configuration.md documents every key).
#pragma once

#include "common/toml_reader.h"
#include "delegates/delegate.h"

namespace owrap {

// [a-z0-9_-]{1,63}: the gateway lowercases driver names (both the
// wrapper's and the delegate's name are driver_config keys).
bool valid_driver_name(const std::string& name);

// The socket path of a "unix:" endpoint ("unix:///abs" or "unix:path").
std::string endpoint_socket_path(const std::string& endpoint);

// The keys [delegate] accepts: the parser's and the docs test's one list.
const std::vector<std::string>& delegate_config_keys();

// Reads [delegate]; errors go to the section's error list, each naming its
// full key.
DelegateOptions read_delegate_options(TomlSection& section);

}  // namespace owrap
