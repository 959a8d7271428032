#!/usr/bin/env bash
# The soak (issue 7, acceptance 5; not in CI): builds `tlsgate` and the soak example in release
# mode, then runs two `tlsgate run` processes on loopback — a relay R and a gateway G holding a TLS
# passthrough edge, a plain HTTP edge (both tunnelling to R over h2), an explicit intercepting proxy
# and the admin API — in front of in-process origins and a test DNS server. Four workers keep
# tunnel, plain HTTP, bump and splice requests going back to back while, every --fault-every
# seconds after a traffic-only warm-up (a quarter of the run, at most 60 s), the next fault in rotation hits:
# kill -9 of R and a restart on its port 2 s later; a 5 s DNS outage; a burst of 300 half
# ClientHellos / garbage connections held 3 s against the edge and the proxy; SIGHUP reload of G
# (checked in its metrics); requests to a resetting and a stalling origin through the proxy (each
# must end in a 502/504 or a failed body within 10 s). A healthy request's error counts as
# explained only if it overlaps the window of a fault that affects its path (relay kill: tunnel and
# HTTP until 8 s after the restart; DNS: every path until 8 s after the outage); all others are
# printed. Both processes run with one glibc malloc arena (GLIBC_TUNABLES=glibc.malloc.arena_max=1;
# why: ONE_MALLOC_ARENA in crates/tlsgate/examples/soak.rs), and G keeps a /flows ring of 256
# records, full before the baseline (the default 10,000 were still filling after it). The idle baseline is taken after the
# first round of every fault (the arena's high-water mark settles there); G's RSS before each later
# fault is printed. It exits non-zero on an
# unexplained error, a faulty request without a clear error, G's
# RSS growing 5% or more from that baseline, or fds of G or R above their idle
# baseline at the end. Logs stay in $TMPDIR/tlsgate-soak-PID when it fails.
#
#   scripts/soak.sh                      # 10 minutes, a fault every 30 s
#   scripts/soak.sh --minutes 2 --fault-every 8   # smoke: a warm-up round, then every fault again
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
fault_every=30
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --fault-every) fault_every=${2%s}; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--fault-every SECS]" >&2; exit 2 ;;
  esac
done

cargo build --release -p tlsgate --bin tlsgate --example soak
exec target/release/examples/soak --tlsgate target/release/tlsgate \
  --minutes "$minutes" --fault-every "$fault_every"
