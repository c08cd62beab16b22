#!/usr/bin/env bash
# One entry point for a fresh Debian bookworm machine (run as root):
#   scripts/dev.sh demo   install what is missing, build, run the demo
#   scripts/dev.sh test   install what is missing, build, run the whole suite
#   scripts/dev.sh build  install what is missing, build
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(meson ninja-build pkg-config g++ libgrpc++-dev libabsl-dev protobuf-compiler-grpc libprotobuf-dev
          protobuf-compiler libboost-dev nlohmann-json3-dev libtomlplusplus-dev libnghttp2-dev catch2 util-linux procps
          python3 python3-grpcio python3-protobuf)

install_deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=debugoptimized >/dev/null
  fi
  ninja -C build -j2
}

# The unit binaries once more under ThreadSanitizer: the call pipeline's
# interleavings, the hook chain with hooks answering from their own threads,
# the builtins (quota's concurrent creates), config/plan/log/secrets. Not the
# binaries that start the wrapper, the memory driver or hook processes: they
# would need those built here too and take most of the suite's time.
# tests/run-tests runs the same list (test_unit without its [e2e] cases).
TSAN_TARGETS=(tests/test_unit tests/test_call tests/test_hooks_chain tests/test_hooks_builtin)
build_tsan() {
  if [ ! -f build-tsan/build.ninja ]; then
    meson setup build-tsan --buildtype=debugoptimized -Db_sanitize=thread -Dcpp_args=-Wno-tsan >/dev/null
  fi
  ninja -C build-tsan -j2 "${TSAN_TARGETS[@]}"
}

case "${1:-}" in
  deps) install_deps ;;
  build) install_deps; build ;;
  test) install_deps; build; build_tsan; exec bash tests/run-tests build build-tsan ;;
  demo) install_deps; build; exec bash examples/demo.sh build ;;
  *) echo "usage: scripts/dev.sh demo|test|build|deps" >&2; exit 2 ;;
esac
