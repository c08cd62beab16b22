#!/usr/bin/env bash
# The wrapper in front of the memory driver: a create through the wrapper, a
# failing create passed through unchanged, a delete, and a chain of two.
set -euo pipefail
build="$(cd "${1:-build}" && pwd)"
W="$build/tools/openshell-driver-wrapper"
M="$build/tools/memory_driver/openshell-driver-memory"
dir="$(mktemp -d /tmp/owrap-demo-XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

cat >"$dir/acme.toml" <<TOML
[wrapper]
name = "acme"
socket = "$dir/run/acme.sock"
config_mode = "nested"
[delegate]
name = "memory"
command = ["$M", "--bind-socket", "{socket}"]
ready_timeout_ms = 10000
TOML
cat >"$dir/edge.toml" <<TOML
[wrapper]
name = "edge"
socket = "$dir/run/edge.sock"
[delegate]
name = "acme"
command = ["$W", "run", "--config", "$dir/acme.toml", "--bind-socket", "{socket}"]
TOML

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ctl() { echo "\$ ctl --socket $1 ${*:2}"; "$W" ctl --socket "$@" || echo "(exit $?)"; }

step "check-config"
"$W" check-config "$dir/acme.toml"

step "start the wrapper (it launches the memory driver as its delegate)"
"$W" run --config "$dir/acme.toml" --log-level warn 2>"$dir/acme.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/acme.sock" ] && break; sleep 0.1; done
ctl "$dir/run/acme.sock" caps

step "create through the wrapper: the gateway's block is {\"memory\": {...base block...}}"
echo '{"id":"demo-1","name":"demo","spec":{"sandbox_token":"not-for-logs","template":{"image":"ghcr.io/example/agent:1","driver_config":{"memory":{}}}}}' \
  | ctl "$dir/run/acme.sock" create -
ctl "$dir/run/acme.sock" get demo-1

step "a failing create passes through unchanged (the base driver refuses)"
echo '{"id":"demo-2","spec":{"template":{"driver_config":{"memory":{"fail":{"CreateSandbox":"RESOURCE_EXHAUSTED"}}}}}}' \
  | ctl "$dir/run/acme.sock" create -
step "a key the wrapper does not own is refused with its path"
echo '{"id":"demo-3","spec":{"template":{"driver_config":{"memory":{},"ipam":{"pool":"x"}}}}}' \
  | ctl "$dir/run/acme.sock" create -

step "delete (deleted=true, then false)"
ctl "$dir/run/acme.sock" delete demo-1
ctl "$dir/run/acme.sock" delete demo-1

step "a chain: edge -> acme -> memory, each peeling its own layer"
"$W" run --config "$dir/edge.toml" --log-level warn 2>"$dir/edge.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$dir/run/edge.sock" ] && break; sleep 0.1; done
ctl "$dir/run/edge.sock" caps
echo '{"id":"chain-1","spec":{"template":{"driver_config":{"acme":{"memory":{}}}}}}' | ctl "$dir/run/edge.sock" create -
ctl "$dir/run/edge.sock" list

step "the token never reached a log"
if grep -rq "not-for-logs" "$dir"/*.log; then echo "LEAK"; exit 1; else echo "no log line contains the sandbox token"; fi
