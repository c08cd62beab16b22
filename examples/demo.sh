#!/usr/bin/env bash
# shellcheck disable=SC2016  # backquotes in expected texts are literal (serde's error format)
# The wrapper in front of the memory driver: a create through the wrapper, a
# failing create passed through unchanged, a delete, a chain of two; then a
# hook chain (examples/hooks/demo-wrapper.toml) over the memory driver judging
# driver_config as the Kubernetes driver does: check-config, plan, a create
# shaped by a defaults hook, denials by a policy hook and a Python hook, and
# the base driver refusing a hook's mistake.
#   examples/demo.sh [BUILD_DIR]
# Every step checks what it shows: the script exits 1 at the first one that
# does not.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-build}" && pwd)"
W="$build/tools/openshell-driver-wrapper"
M="$build/tools/memory_driver/openshell-driver-memory"
dir="$(mktemp -d /tmp/owrap-demo-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() {
  printf '\033[1;31mDEMO FAILED: %s\033[0m\n' "$*" >&2
  exit 1
}
# show [--in JSON] ARGS...: runs `openshell-driver-wrapper ARGS` (JSON on its
# stdin), prints the command and what it printed; $out and $rc keep both.
show() {
  local input=""
  if [ "$1" = "--in" ]; then
    input="$2"
    shift 2
  fi
  if [ -n "$input" ]; then
    echo "\$ echo '$input' | openshell-driver-wrapper $*"
  else
    echo "\$ openshell-driver-wrapper $*"
  fi
  rc=0
  out="$(printf '%s' "$input" | "$W" "$@" 2>&1)" || rc=$?
  printf '%s\n' "$out"
  if [ "$rc" -ne 0 ]; then echo "(exit $rc)"; fi
}
# expect WHAT TEXT...: every TEXT is in the last output, or the demo fails.
expect() {
  local what="$1" t
  shift
  for t in "$@"; do
    grep -qF -- "$t" <<<"$out" || fail "$what: expected $t in the output above"
  done
  printf '\033[32m   ok: %s\033[0m\n' "$what"
}
expect_rc() { [ "$rc" -eq "$1" ] || fail "expected exit status $1, got $rc"; }
wait_socket() {
  for _ in $(seq 100); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  fail "nothing serves on $1 after 10 s (see the logs in $dir)"
}

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
acme="$dir/run/acme.sock"
edge="$dir/run/edge.sock"

printf '\033[1m# Part 1: the wrapper passes everything through\033[0m\n'

step "check-config"
show check-config "$dir/acme.toml"
expect_rc 0
expect "the configuration resolves" '"name": "acme"'

step "start the wrapper (it launches the memory driver as its delegate)"
"$W" run --config "$dir/acme.toml" --log-level warn 2>"$dir/acme.log" &
pids+=($!)
wait_socket "$acme"
show ctl --socket "$acme" caps
expect "the wrapper answers under its own name" '"driver_name":"acme"' "(delegate memory: memory"

step "create through the wrapper: the gateway's block is {\"memory\": {...base block...}}"
show --in '{"id":"demo-1","name":"demo","spec":{"sandbox_token":"not-for-logs","template":{"image":"ghcr.io/example/agent:1","driver_config":{"memory":{}}}}}' \
  ctl --socket "$acme" create -
expect_rc 0
show ctl --socket "$acme" get demo-1
expect "the memory driver holds the sandbox" '"id":"demo-1"' '"image":"ghcr.io/example/agent:1"'

step "a failing create passes through unchanged (the base driver refuses)"
show --in '{"id":"demo-2","spec":{"template":{"driver_config":{"memory":{"fail":{"CreateSandbox":"RESOURCE_EXHAUSTED"}}}}}}' \
  ctl --socket "$acme" create -
expect_rc 1
expect "the base driver's status reaches the caller" "RESOURCE_EXHAUSTED: injected failure"

step "a key the wrapper does not own is refused with its path"
show --in '{"id":"demo-3","spec":{"template":{"driver_config":{"memory":{},"ipam":{"pool":"x"}}}}}' \
  ctl --socket "$acme" create -
expect_rc 1
expect "refused naming the path" "INVALID_ARGUMENT: driver_config.acme.ipam: unknown key"

step "delete (deleted=true, then false)"
show ctl --socket "$acme" delete demo-1
expect "deleted" '{"deleted":true}'
show ctl --socket "$acme" delete demo-1
expect "already gone" '{"deleted":false}'

step "a chain: edge -> acme -> memory, each peeling its own layer"
"$W" run --config "$dir/edge.toml" --log-level warn 2>"$dir/edge.log" &
pids+=($!)
wait_socket "$edge"
show ctl --socket "$edge" caps
expect "each layer names the next" "(delegate acme: acme openshell-driver-wrapper" "(delegate memory: memory"
show --in '{"id":"chain-1","spec":{"template":{"driver_config":{"acme":{"memory":{}}}}}}' ctl --socket "$edge" create -
expect_rc 0
show ctl --socket "$edge" list
expect "the sandbox went through both wrappers" '"id":"chain-1"'

printf '\n\033[1m# Part 2: a hook chain over a Kubernetes-shaped base driver\033[0m\n'

# The exec hook needs any python3; the grpc hook Debian's python3-grpcio and
# python3-protobuf (scripts/dev.sh installs them) and protoc.
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3)" || fail "python3 is needed for the Python hooks"
grpc_hook=yes
if ! "$python" -c 'import grpc, google.protobuf' 2>/dev/null || ! command -v protoc >/dev/null; then
  grpc_hook=no
fi
sed -e "s|@DIR@|$dir|g" -e "s|@MEMORY@|$M|g" -e "s|@PYTHON@|$python|g" -e "s|@EXAMPLES@|$src/examples/hooks|g" \
  "$src/examples/hooks/demo-wrapper.toml" >"$dir/hooks.toml"
if [ "$grpc_hook" = no ]; then sed -i '/^# --- grpc hook/,$d' "$dir/hooks.toml"; fi
hooked="$dir/hooked/acme.sock"

step "the chain: examples/hooks/demo-wrapper.toml (paths filled in)"
sed -n '/^\[wrapper\]/,$p' "$dir/hooks.toml"

if [ "$grpc_hook" = yes ]; then
  step "start the grpc hook (examples/hooks/grpc/quota_label_hook.py)"
  echo "\$ examples/hooks/grpc/generate.sh $dir/pb2"
  "$src/examples/hooks/grpc/generate.sh" "$dir/pb2"
  echo "\$ $python examples/hooks/grpc/quota_label_hook.py --socket $dir/quota-label.sock --pb2-dir $dir/pb2 &"
  "$python" "$src/examples/hooks/grpc/quota_label_hook.py" --socket "$dir/quota-label.sock" --pb2-dir "$dir/pb2" \
    --record "$dir/quota-label-requests.jsonl" 2>"$dir/quota-label.log" &
  pids+=($!)
  wait_socket "$dir/quota-label.sock"
else
  step "the grpc hook is left out: $python cannot import grpc and google.protobuf, or protoc is missing"
  echo "(scripts/dev.sh installs python3-grpcio, python3-protobuf and protobuf-compiler)"
fi

step "1. check-config lists the chain (the hooks of its JSON, one line each; a grpc hook with its Describe answer)"
echo "\$ openshell-driver-wrapper check-config $dir/hooks.toml"
rc=0
out="$("$W" check-config "$dir/hooks.toml" 2>"$dir/check-config.log")" || rc=$?
[ "$rc" -eq 0 ] || {
  printf '%s\n' "$out"
  cat "$dir/check-config.log"
  fail "check-config refused the demo's configuration"
}
out="$("$python" -c 'import json, sys
for h in json.load(sys.stdin)["hooks"]: print(json.dumps(h))' <<<"$out")"
printf '%s\n' "$out"
expect "the hooks, in chain order" '"name": "defaults"' '"name": "stamp"' '"name": "policy"'
if [ "$grpc_hook" = yes ]; then expect "the grpc hook described itself" '"describe": {' '"request_config_key": "quota-label"'; fi

sandbox='{"id":"sb-1","name":"agent","namespace":"team-a","spec":{"sandbox_token":"not-for-logs","template":{"image":"ghcr.io/acme/agent:1.4","labels":{"team":"blue"},"resources":{"memory_limit":"2Gi"},"driver_config":{"kubernetes":{"pod":{"runtime_class_name":"gvisor"}}}}}}'
echo "$sandbox" >"$dir/sandbox.json"

step "2. plan: the final plan and, per hook, its verdict and the paths it changed (nothing is created)"
echo "sandbox.json: $sandbox"
show plan --config "$dir/hooks.toml" --sandbox "$dir/sandbox.json"
expect_rc 0
expect "defaults shaped the Kubernetes block and added labels from templates" \
  '"/spec/template/driver_config/pod/node_selector"' '"/spec/template/driver_config/pod/tolerations"' \
  '"pool": "sandboxes"' '"runtime_class_name": "gvisor"' '"tenant": "blue"' '"sandbox-ref": "team-a/agent"'
expect "the Python exec hook stamped the plan" '"/spec/template/labels/example.com~1stamped-by"' '"EXAMPLE_STAMP": "1"'
if [ "$grpc_hook" = yes ]; then expect "the Python grpc hook stamped the plan" '"example.com/grpc-hook": "seen"'; fi
expect "every validator allowed it" '"result": "allowed"'
if grep -qF "not-for-logs" <<<"$out"; then fail "the sandbox token is in the plan output"; fi

step "start the hooked wrapper; GetCapabilities names the chain"
"$W" run --config "$dir/hooks.toml" --log-level info 2>"$dir/hooked.log" &
pids+=($!)
wait_socket "$hooked"
show ctl --socket "$hooked" caps
expect "delegate and chain named" "(delegate kubernetes: memory 0.1.0 (schema kubernetes)); hooks: defaults, stamp, policy"
echo "the wrapper's log line at start:"
grep -F '"message":"hook chain"' "$dir/hooked.log" || fail "no \"hook chain\" log line"

step "3. a real create through the wrapper; the stored sandbox carries the defaults"
show --in "$sandbox" ctl --socket "$hooked" create -
expect_rc 0
show ctl --socket "$hooked" get sb-1
expect "the memory driver (as Kubernetes) stored the shaped plan" \
  '"node_selector":{"pool":"sandboxes"}' '"runtime_class_name":"gvisor"' '"key":"sandbox"' \
  '"tenant":"blue"' '"sandbox-ref":"team-a/agent"'
expect "with the Python hooks' stamps" '"example.com/stamped-by":"exec-example"' '"EXAMPLE_STAMP":"1"'
if [ "$grpc_hook" = yes ]; then expect "and the grpc hook's label" '"example.com/grpc-hook":"seen"'; fi

step "4. policy: an image outside ghcr.io/acme/ is denied, the rule reaches the caller"
show --in '{"id":"sb-2","name":"tool","namespace":"team-a","spec":{"template":{"image":"docker.io/library/busybox:1","labels":{"team":"blue"}}}}' \
  ctl --socket "$hooked" create -
expect_rc 1
expect "denied by the policy hook, naming the rule" \
  'FAILED_PRECONDITION: hook "policy" denied CreateSandbox: rule images.allowed_prefixes: image "docker.io/library/busybox:1" is not under any allowed prefix (ghcr.io/acme/)'
show ctl --socket "$hooked" get sb-2
expect "the base driver never saw it" "NOT_FOUND"

step "5. a Python hook in the chain: stamp_hook.py (exec) denies a :latest image"
show --in '{"id":"sb-3","name":"latest","namespace":"team-a","spec":{"template":{"image":"ghcr.io/acme/agent:latest","labels":{"team":"blue"}}}}' \
  ctl --socket "$hooked" create -
expect_rc 1
expect "denied by the exec hook" 'FAILED_PRECONDITION: hook "stamp" denied CreateSandbox: image tag :latest is not allowed'

step "6. a hook's mistake refused by the base: the defaults hook writes pod.node_selectr"
sed -e 's/^node_selector = /node_selectr = /' -e "s|$dir/hooked/|$dir/typo/|" "$dir/hooks.toml" >"$dir/typo.toml"
echo "\$ diff hooks.toml typo.toml"
diff "$dir/hooks.toml" "$dir/typo.toml" || true
echo "\$ openshell-driver-wrapper plan --config $dir/typo.toml --sandbox $dir/sandbox.json --validate-delegate"
echo "  (its result, the delegate's verdict and the defaults hook's entry; the rest is as in step 2)"
rc=0
out="$("$W" plan --config "$dir/typo.toml" --sandbox "$dir/sandbox.json" --validate-delegate 2>"$dir/typo-plan.log")" || rc=$?
out="$("$python" -c 'import json, sys
d = json.load(sys.stdin)
print(json.dumps({"result": d["result"], "delegate": d.get("delegate"),
                  "hooks": [h for h in d["hooks"] if h["hook"] == "defaults"]}, indent=2))' <<<"$out")" ||
  fail "plan did not print its JSON report"
printf '%s\n' "$out"
echo "(exit $rc)"
expect_rc 1
expect "the chain allowed it, the Kubernetes schema did not" \
  '"/spec/template/driver_config/pod/node_selectr"' '"verdict": "invalid"' \
  'invalid kubernetes driver_config: pod: unknown field `node_selectr`' '"result": "refused"'
echo "and a real create through a wrapper running typo.toml:"
"$W" run --config "$dir/typo.toml" --log-level warn 2>"$dir/typo.log" &
pids+=($!)
wait_socket "$dir/typo/acme.sock"
show --in "$sandbox" ctl --socket "$dir/typo/acme.sock" create -
expect_rc 1
expect "the base driver's refusal reaches the caller" \
  'INVALID_ARGUMENT: invalid kubernetes driver_config: pod: unknown field `node_selectr`'

step "the sandbox token never reached a log or a hook"
if grep -rqF "not-for-logs" "$dir"/*.log "$dir"/*.jsonl; then fail "the token is in $(grep -rlF not-for-logs "$dir"/*.log "$dir"/*.jsonl)"; fi
echo "no log line and no hook request contains it ($(cat "$dir"/*.jsonl | wc -l) hook requests recorded)"

printf '\n\033[1;32mdemo: every step showed what it should\033[0m\n'
