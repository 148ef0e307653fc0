#!/usr/bin/env bash
# Sends malformed and hostile requests to a real segmentd from a second,
# independent client (Python grpcio) and checks every answer's gRPC code,
# and that the server stays healthy with its data unchanged
# (tests/hostile/hostile.py says what it sends).
#
# Uses an already built binary: target/debug/segmentd, or $SEGMENTD_BIN.
# Installs pinned grpcio packages into a venv under ${TMPDIR:-/tmp}, reused
# from run to run, and generates the Python stubs from the proto each time.
# Exits non-zero on any mismatch or failed check.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

bin="${SEGMENTD_BIN:-$root/target/debug/segmentd}"
if [[ ! -x "$bin" ]]; then
  echo "hostile.sh: no segmentd binary at $bin (build it, or set SEGMENTD_BIN)" >&2
  exit 1
fi

# Current releases that install on CPython 3.11 as wheels. grpcio-tools
# bundles protoc and the well-known types (timestamp.proto, field_mask.proto).
pins=(
  grpcio==1.85.1
  grpcio-tools==1.85.1
  grpcio-health-checking==1.85.1
  grpcio-reflection==1.85.1
  protobuf==7.36.2
)

venv="${TMPDIR:-/tmp}/segmentd-hostile-venv"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c '' 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
# Quick when the pins are already there.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"

stubs="$(mktemp -d "${TMPDIR:-/tmp}/segmentd-hostile-stubs.XXXXXX")"
trap 'rm -rf "$stubs"' EXIT
"$venv/bin/python" -m grpc_tools.protoc \
  -I "$root/proto" \
  --python_out="$stubs" \
  --grpc_python_out="$stubs" \
  "$root/proto/segmentd/v1/segmentd.proto"

# A watchdog well inside CI's patience: a normal run takes well under a minute.
timeout --kill-after=10 110 \
  "$venv/bin/python" "$root/tests/hostile/hostile.py" --bin "$bin" --stubs "$stubs"
