#!/usr/bin/env bash
# CI smoke run of every cargo-fuzz target in fuzz/: builds them (one build, shared dependencies),
# then runs each for FUZZ_SECONDS (default 30) from its committed corpus, failing on any crash,
# leak, timeout or out-of-memory. New inputs go to a scratch directory, never into fuzz/corpus.
#
# cargo-fuzz needs nightly flags; the pinned stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1, so no nightly is needed. cargo-fuzz is installed (pinned, --locked) if
# missing. The smoke run builds without a sanitizer (FUZZ_SANITIZER=address to add ASan): the
# code under test forbids `unsafe`, and the instrumented build of the whole runtime would cost CI
# minutes; long local runs use ASan (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz-smoke: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# fuzz/ has its own Cargo.lock (it is not a workspace member). Versions in it stay pinned; a
# dependency added to a crate since it was last updated is resolved on the fly, so say so.
if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
  echo "fuzz-smoke: warning: fuzz/Cargo.lock is stale; update it with" \
    "'cargo update -w --manifest-path fuzz/Cargo.toml' and commit it" >&2
fi

targets=$(cargo fuzz list)
echo "fuzz-smoke: building $(echo $targets)"
start=$SECONDS
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz-smoke: built in $((SECONDS - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
  mkdir -p "$scratch/$target"
  echo "== fuzz-smoke: $target for ${seconds}s"
  # -max_total_time bounds the run; -timeout bounds one input; -rss_limit_mb bounds memory.
  # A crash exits non-zero and leaves the input under $scratch (printed by libFuzzer).
  if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$scratch/$target-" 2>"$scratch/$target.log"; then
    tail -n 60 "$scratch/$target.log"
    for artifact in "$scratch/$target"-*; do
      [[ -e $artifact ]] && { echo "fuzz-smoke: $target crashed on $artifact:"; od -c "$artifact" | head -n 20; }
    done
    echo "fuzz-smoke: $target FAILED" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$scratch/$target.log" || true
  grep -E '(INITED|DONE) ' "$scratch/$target.log" | tail -n 1 || true
done
echo "fuzz-smoke: every target ran ${seconds}s without a crash ($((SECONDS - start)) s in all)"
