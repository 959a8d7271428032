#!/usr/bin/env bash
# bench/run.sh — run every benchmark scenario and print one Markdown table (bench/README.md).
#
#   sudo bench/run.sh                 # full run (about 30 minutes on 2 cores)
#   sudo QUICK=1 bench/run.sh         # small sizes and short runs, to check the setup (a few minutes)
#
# It installs what it needs (apt-get; mitmproxy from PyPI into a venv), builds tlsgate and
# tlsgate-load in release mode, then runs bench/bench.py inside a private network and mount
# namespace: only that namespace's loopback carries traffic, and /etc/hosts is replaced there
# (only there) by a file naming the benchmark hosts.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv=${BENCH_VENV:-$here/.venv}

die() { echo "bench/run.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages, raises limits and makes namespaces)"

install_packages() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
  command -v stunnel4 >/dev/null || missing+=(stunnel4)
  command -v haproxy >/dev/null || missing+=(haproxy)
  [ -x /usr/sbin/squid ] && [ -x /usr/lib/squid/security_file_certgen ] || missing+=(squid-openssl)
  command -v h2load >/dev/null || missing+=(nghttp2-client)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v unshare >/dev/null || missing+=(util-linux)
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  # Keep the packages' services from starting: the benchmark runs its own instances.
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || {
    [ $created = 1 ] && rm -f "$policy"; die "apt-get install failed"; }
  [ $created = 1 ] && rm -f "$policy"
  return 0
}

install_mitmproxy() {
  [ -x "$venv/bin/mitmdump" ] && return 0
  echo "installing mitmproxy into $venv" >&2
  python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$venv/bin/pip" install -q mitmproxy || die "pip install mitmproxy failed"
}

if [ -z "${TLSGATE_BENCH_INNER:-}" ]; then
  install_packages
  install_mitmproxy
  if [ -z "${BENCH_NO_BUILD:-}" ]; then
    (cd "$root" && cargo build --release --locked -p tlsgate -p tlsgate-loadgen) || die "cargo build failed"
  fi
  # Each held connection costs descriptors in the client, both tunnel ends and the origin: raise the
  # soft limit to the hard one (M1 needs about 2 x BENCH_HOLD + 100 per process).
  ulimit -n "$(ulimit -Hn)" || die "cannot raise the descriptor limit"
  exec unshare --net --mount --fork -- env TLSGATE_BENCH_INNER=1 BENCH_VENV="$venv" "$0" "$@"
fi

# Inside the namespaces: bring up loopback, then hand over to the orchestrator.
ip link set lo up 2>/dev/null || die "ip link set lo up failed (apt-get install iproute2)"
exec python3 "$here/bench.py" --root "$root" --venv "$venv" "$@"
