#!/usr/bin/env bash
# Captures the first bytes real TLS clients send, for the ClientHello parser tests.
#
# A tiny listener on 127.0.0.1 (an ephemeral port, loopback only) accepts one connection, reads until
# the client goes quiet or stops sending (it is waiting for a ServerHello that never comes), writes
# what it received to a file and closes. Each client below is pointed at that listener.
#
# Usage: crates/wire/testdata/capture.sh   (rewrites the *.bin files next to this script)
# Needs: python3, curl, openssl. Captured with Debian 12's curl 7.88.1 and OpenSSL 3.0.
set -euo pipefail

cd "$(dirname "$0")"
HOST=private.service.example.com

# listen OUT: starts a one-shot listener writing to OUT; sets PORT and LISTENER.
listen() {
    local out=$1 portfile
    portfile=$(mktemp)
    python3 - "$out" "$portfile" <<'PY' &
import socket, sys
out, portfile = sys.argv[1], sys.argv[2]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
with open(portfile, "w") as f:
    f.write(str(srv.getsockname()[1]))
srv.settimeout(10)
conn, _ = srv.accept()
conn.settimeout(0.5)
data = b""
while len(data) < 65536:
    try:
        chunk = conn.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    data += chunk
with open(out, "wb") as f:
    f.write(data)
conn.close()
PY
    LISTENER=$!
    while [ ! -s "$portfile" ]; do sleep 0.05; done
    PORT=$(cat "$portfile")
    rm -f "$portfile"
}

# capture OUT CMD...: runs CMD (with {PORT} replaced) against a fresh listener.
capture() {
    local out=$1
    shift
    listen "$out"
    local args=()
    for a in "$@"; do args+=("${a//\{PORT\}/$PORT}"); done
    timeout 5 "${args[@]}" </dev/null >/dev/null 2>&1 || true
    wait "$LISTENER"
    printf '%-40s %5d bytes\n' "$out" "$(stat -c %s "$out")"
}

curl_to() { echo curl -k -sS --max-time 3 --resolve "$HOST:{PORT}:127.0.0.1" "$@" "https://$HOST:{PORT}/"; }

# shellcheck disable=SC2046
{
capture curl_h2.bin              $(curl_to --http2)
capture curl_http11.bin          $(curl_to --http1.1)
capture curl_no_alpn.bin         $(curl_to --no-alpn)
capture curl_tls12_only.bin      $(curl_to --tlsv1.2 --tls-max 1.2)
}
capture openssl_tls13.bin        openssl s_client -connect "127.0.0.1:{PORT}" -servername "$HOST" -tls1_3
capture openssl_tls12.bin        openssl s_client -connect "127.0.0.1:{PORT}" -servername "$HOST" -tls1_2
capture openssl_no_sni.bin       openssl s_client -connect "127.0.0.1:{PORT}" -noservername
capture openssl_no_sni_tls12.bin openssl s_client -connect "127.0.0.1:{PORT}" -noservername -tls1_2
capture openssl_alpn_mixed_case_sni.bin \
    openssl s_client -connect "127.0.0.1:{PORT}" -servername "Private.Service.EXAMPLE.com" -alpn h2,http/1.1
