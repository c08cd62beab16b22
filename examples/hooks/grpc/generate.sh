#!/usr/bin/env bash
# Generates the Python message modules (hooks_pb2, compute_driver_pb2,
# options_pb2) for the example into OUTDIR:
#   examples/hooks/grpc/generate.sh OUTDIR
# Only protoc's --python_out: the service is registered by hand in
# quota_label_hook.py, so no grpc_tools plugin is needed (Debian's
# python3-grpc-tools is far older than its python3-grpcio).
set -euo pipefail
out="${1:?usage: generate.sh OUTDIR}"
proto="$(cd "$(dirname "$0")/../../../proto" && pwd)"
mkdir -p "$out"
protoc --proto_path="$proto" --proto_path=/usr/include --python_out="$out" \
  "$proto/hooks.proto" "$proto/compute_driver.proto" "$proto/options.proto"
