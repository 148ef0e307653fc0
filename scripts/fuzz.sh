#!/usr/bin/env bash
# Fuzzes segmentd with cargo-fuzz on stable Rust (no sanitizer): one target,
# or every target one after another, FUZZ_SECONDS each (300 by default).
#
#   scripts/fuzz.sh                # all targets
#   scripts/fuzz.sh rule_text      # one target
#   FUZZ_SECONDS=60 scripts/fuzz.sh stored_rows
#   FUZZ_KEEP_GOING=1 scripts/fuzz.sh rule_text   # past crashes, timeouts and OOMs
#
# The committed seeds (fuzz/seeds/TARGET) are read, never written; what a
# run finds goes to fuzz/corpus/TARGET, and crashes, timeouts and
# out-of-memory inputs to fuzz/artifacts/TARGET, neither committed. CI does
# not run this.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

targets=(rule_text structured_rule page_token stored_rows)
seconds=${FUZZ_SECONDS:-300}
# libFuzzer stops at the first crash; its fork mode, with one worker, goes
# on and keeps every crashing input, so one known bug hides no others.
keep_going=()
if [[ -n ${FUZZ_KEEP_GOING:-} ]]; then
  keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

if [[ $# -gt 1 ]]; then
  echo "usage: $0 [TARGET]  (one of ${targets[*]})" >&2
  exit 2
fi
if [[ $# -eq 1 ]]; then
  if [[ " ${targets[*]} " != *" $1 "* ]]; then
    echo "unknown target \`$1\`: choose one of ${targets[*]}" >&2
    exit 2
  fi
  targets=("$1")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

started=$(mktemp)
trap 'rm -f "$started"' EXIT
failed=()
for target in "${targets[@]}"; do
  echo "== $target, ${seconds}s"
  mkdir -p "corpus/$target" "artifacts/$target"
  touch "$started"
  # One process, one job: the machine has two cores. libFuzzer writes new
  # inputs to the first directory only.
  if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${keep_going[@]}"; then
    failed+=("$target")
  fi
  found=$(find "artifacts/$target" -type f -newer "$started" | sort)
  if [[ -n $found ]]; then
    echo "== $target: new artifacts:"
    echo "$found"
    [[ " ${failed[*]} " == *" $target "* ]] || failed+=("$target")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo
  echo "failed: ${failed[*]}; the input is the artifact libFuzzer named above, under fuzz/artifacts/TARGET/."
  echo "reproduce (from fuzz/):  cargo fuzz run --sanitizer none TARGET artifacts/TARGET/crash-..."
  echo "minimise (from fuzz/):   cargo fuzz tmin --sanitizer none TARGET artifacts/TARGET/crash-..."
  echo "backtrace: add RUST_BACKTRACE=1 before the reproduce command."
  exit 1
fi
