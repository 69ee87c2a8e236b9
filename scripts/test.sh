#!/usr/bin/env bash
# The test command of the README: installs what the tests need when it is missing, then runs the
# whole test suite. Safe to run on a fresh machine that has only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need, as "command:debian-package". The Redis tests start their own
# redis-server on free ports (nothing depends on a Redis the machine may run); the metrics tests
# run a Prometheus server and promtool; the TLS tests make certificates with openssl
# (tests/tls/gen-certs.sh) and read TLS alerts with its s_client; scripts/test-at.sh runs the
# suite at chosen calendar instants with faketime; tests/proto.rs compiles the gRPC contract
# with stock protoc, as other languages' tools do (the build itself needs no protoc).
needs=("redis-server:redis-server" "prometheus:prometheus" "promtool:prometheus" "openssl:openssl" "faketime:faketime" "protoc:protobuf-compiler")
missing=()
for need in "${needs[@]}"; do
  command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  # One package can serve several commands (prometheus brings promtool).
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo test --workspace --locked
