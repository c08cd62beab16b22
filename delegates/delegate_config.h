// [delegate]: the delegates component reads its own table of the wrapper's
// configuration (docs/configuration.md documents every key).
#pragma once

#include "common/toml_reader.h"
#include "delegates/delegate.h"

namespace owrap {

// The keys [delegate] accepts: the parser's and the docs test's one list.
const std::vector<std::string>& delegate_config_keys();

// Reads [delegate]; errors go to the section's error list, each naming its
// full key.
DelegateOptions read_delegate_options(TomlSection& section);

}  // namespace owrap
