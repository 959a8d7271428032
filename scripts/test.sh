#!/usr/bin/env bash
# Runs the whole test suite: `cargo test --workspace --locked` (extra arguments are passed on).
#
# The end-to-end tests (crates/tlsgate/tests/e2e) build network namespaces, an iptables
# firewall and an nginx origin, so they need root and Debian's nginx, iproute2, iptables,
# curl, openssl and procps, and the metrics test checks /metrics with promtool (Debian's
# prometheus package). Run as root, this script installs whichever of those is missing
# (without letting nginx start as a system service). Without root the e2e tests fail with a
# clear message unless TLSGATE_SKIP_E2E=1 is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# Root's tools live in sbin; some environments leave it off PATH.
export PATH="${PATH}:/usr/sbin:/sbin"

# command -> Debian package providing it
declare -A tools=(
  [nginx]=nginx
  [ip]=iproute2
  [ss]=iproute2
  [iptables]=iptables
  [ip6tables]=iptables
  [curl]=curl
  [openssl]=openssl
  [sysctl]=procps
  [promtool]=prometheus
)
missing=()
for tool in "${!tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${tools[$tool]}")
done
if ((${#missing[@]} > 0)); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ $(id -u) -eq 0 ]]; then
    echo "test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Debian starts services on install; policy-rc.d exit 101 forbids it, so no system nginx
    # runs beside the tests' own (each started in a namespace and stopped by PID).
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      own_policy=1
    fi
    status=0
    apt-get install -y -q --no-install-recommends "${missing[@]}" || status=$?
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((status == 0)) || exit "$status"
    if [[ " ${missing[*]} " == *" nginx "* ]] && [[ -d /run/systemd/system ]]; then
      systemctl disable --now nginx || true
    fi
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
      systemctl disable --now prometheus || true
    fi
  else
    echo "test.sh: missing ${missing[*]}; not root, so not installing them." >&2
    echo "test.sh: the e2e tests will fail (run as root, or set TLSGATE_SKIP_E2E=1 to skip them)." >&2
  fi
fi

exec cargo test --workspace --locked "$@"
