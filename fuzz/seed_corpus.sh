#!/usr/bin/env bash
# Seeds corpus/<target>/ for every fuzz target from the repository's own test vectors, examples
# and test data, so each fuzzer starts from inputs that reach deep into its parser. Seeds have
# descriptive names; libFuzzer names what it adds by hash (`cargo fuzz cmin` before committing).
#
#   client_hello    crates/wire/testdata/*.bin (captured curl/openssl hellos), each also
#                   re-framed into 1-byte records and into two records (the reassembly code)
#   request_line    CONNECT / absolute-form / origin-form request heads, bare authorities
#   config          examples/*/*.yaml configs, plus an empty file and a wrong one
#   policy_reader   crates/policy/testdata/*.yaml (Cilium), examples/intercept/facebook-tls.yaml,
#                   policy_matcher.yaml and the docs' tlsgate-format example
#   outer_records   scripts of records for the outer TLS layer (layout in
#                   crates/proxy/tests/fuzz_checks/outer_records.rs): data of every size, alerts,
#                   key updates, flipped bits, foreign content types, raw bytes, each chunking
#   policy_matcher  facts for policy_matcher.yaml (layout in
#                   crates/policy/tests/fuzz_checks/policy_matcher.rs): each rule, allowed and
#                   denied requests, header edits, case and trailing-dot variants
set -euo pipefail
cd "$(dirname "$0")"
root=..

# --- client_hello
out=corpus/client_hello
mkdir -p "$out"
for f in "$root"/crates/wire/testdata/*.bin; do
    name=$(basename "$f" .bin)
    cp "$f" "$out/$name.bin"
    python3 - "$f" "$out/$name" <<'PY'
import struct, sys
src, base = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
# The captured vectors are one record each; its payload is the handshake message.
length = struct.unpack(">H", data[3:5])[0]
message = data[5:5 + length]
def frame(fragments):
    return b"".join(b"\x16\x03\x01" + struct.pack(">H", len(f)) + f for f in fragments)
open(base + ".1byte-records.bin", "wb").write(frame([message[i:i + 1] for i in range(len(message))]))
half = len(message) // 2
open(base + ".two-records.bin", "wb").write(frame([message[:half], message[half:]]))
PY
done

# --- request_line
out=corpus/request_line
mkdir -p "$out"
seed() { printf '%b' "$2" >"$out/$1"; }
seed connect.txt 'CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n'
seed connect-ipv6.txt 'CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n'
seed connect-ipv4.txt 'CONNECT 192.0.2.10:443 HTTP/1.1\r\n\r\n'
seed connect-mixed-case-trailing-dot.txt 'CONNECT Api.Example.COM.:443 HTTP/1.1\r\n\r\n'
seed absolute-form.txt 'GET http://www.example.com:8080/path?q=1 HTTP/1.1\r\nHost: www.example.com:8080\r\n\r\n'
seed absolute-form-https.txt 'POST https://[2001:db8::2]/x HTTP/1.1\r\n\r\n'
seed origin-form.txt 'GET /cucumber HTTP/1.1\r\nHost: www.facebook.com\r\n\r\n'
seed asterisk.txt 'OPTIONS * HTTP/1.1\r\n\r\n'
seed long-method.txt 'MKCALENDAR /calendars/x HTTP/1.1\r\n\r\n'
seed bare-authority.txt 'www.facebook.com:443'
seed bare-ipv6.txt '[::1]:80'
seed tls-record.bin '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'
seed ssh.txt 'SSH-2.0-OpenSSH_9.6\r\n'

# --- config
out=corpus/config
mkdir -p "$out"
for f in "$root"/examples/*/*.yaml; do
    # Policy files among the examples go to policy_reader; configs have `listeners:`.
    grep -q '^listeners:' "$f" || continue
    cp "$f" "$out/example-$(basename "$(dirname "$f")")-$(basename "$f")"
done
printf '' >"$out/empty.yaml"
printf 'listeners:\n  - name: x\n    kind: tls-passthrough\n    listen: "127.0.0.1:99999"\n    relay: nowhere\nbogus: 1\ntimeouts: {connect: 5 parsecs}\n' >"$out/invalid-every-kind-of-error.yaml"

# --- policy_reader
out=corpus/policy_reader
mkdir -p "$out"
for f in "$root"/crates/policy/testdata/*.yaml; do cp "$f" "$out/$(basename "$f")"; done
cp "$root"/examples/intercept/facebook-tls.yaml "$out/example-facebook-tls.yaml"
cp policy_matcher.yaml "$out/policy_matcher.yaml"
cat >"$out/docs-tlsgate-format.yaml" <<'YAML'
default: deny
rules:
  - name: facebook
    match: www.facebook.com
    pattern: "*.fbcdn.net"
    ports: [443, "8000-8080"]
    protocol: TCP
    tls: bump
    http:
      - method: GET
        path: /cucumber
        host: "www\\.facebook\\.com"
        headers: ["dada: dada", "X-Present"]
        headerMatches:
          - {name: X-Env, value: prod}
          - {name: X-Mode, value: strict, mismatch: REPLACE}
  - pattern: "**.example.com"
    tls: splice
  - match: [evil.test]
    tls: deny
YAML
printf 'default: maybe\nrules:\n  - match: "*bad*"\n    tls: bumpp\n    http: []\n' >"$out/invalid-tlsgate.yaml"
printf 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec:\n  egress:\n  - toFQDNs: [{matchName: 7}]\n    toPorts: [{ports: [{port: "x"}]}]\n' >"$out/invalid-cilium.yaml"

# --- policy_matcher: [name index or 0xff][port big-endian] then name?, method, path, host, headers
out=corpus/policy_matcher
mkdir -p "$out"
python3 - "$out" <<'PY'
import struct, sys
out = sys.argv[1]
def facts(file, name, port, method, path, host, headers=()):
    names = ["www.facebook.com", "static.fbcdn.net", "a.b.example.com", "api.v1.example.com",
             "blocked.example.com", "plain.test", "example.com", "fbcdn.net"]
    head = bytes([names.index(name)]) if name in names else b"\xff"
    fields = ([] if name in names else [name]) + [method, path, host] + list(headers)
    data = head + struct.pack(">H", port) + "\n".join(fields).encode()
    open(f"{out}/{file}", "wb").write(data)
facts("bump-allowed-cucumber", "www.facebook.com", 443, "GET", "/cucumber", "www.facebook.com", ["dada: dada"])
facts("bump-denied-no-header", "www.facebook.com", 443, "GET", "/cucumber", "www.facebook.com")
facts("bump-edits", "www.facebook.com", 443, "HEAD", "/items/42", "www.facebook.com:443",
      ["X-Env: dev", "X-Debug: 1", "X-Trace: off"])
facts("host-sni-mismatch", "www.facebook.com", 443, "GET", "/cucumber", "evil.test", ["dada: dada"])
facts("missing-host", "www.facebook.com", 443, "GET", "/cucumber", "", ["dada: dada"])
facts("splice-cdn", "static.fbcdn.net", 8080, "GET", "/", "static.fbcdn.net")
facts("no-rule-port", "static.fbcdn.net", 22, "GET", "/", "static.fbcdn.net")
facts("wildcard-deep", "a.b.example.com", 8443, "PUT", "/", "A.B.Example.com.")
facts("wildcard-api", "api.v1.example.com", 443, "POST", "/v2/things", "api.v1.example.com",
      ["authorization: Bearer x"])
facts("deny-rule", "blocked.example.com", 443, "GET", "/", "blocked.example.com")
facts("any-port", "plain.test", 9, "GET", "/", "plain.test")
facts("apex-not-wildcard", "example.com", 443, "GET", "/", "example.com")
facts("apex-not-cdn", "fbcdn.net", 443, "GET", "/", "fbcdn.net")
facts("own-name-mixed-case", "WWW.FaceBook.COM.", 443, "GET", "/cucumber", "www.facebook.com", ["dada: dada"])
facts("ipv6-name", "[2001:db8::1]", 443, "GET", "/", "[2001:db8::1]:443")
PY

for dir in corpus/*/; do printf '%s %s\n' "$(ls "$dir" | wc -l)" "$dir"; done

# --- outer_records: [cut][op…]; ops 0-2 data [len u16][fill][padding], 3 alert [level][desc][pad],
# 4 key update [request], 5 raw handshake [n][bytes], 6 foreign type [type][pad], 7 flip [bit u16],
# 8 raw bytes [n][bytes]. cut: low 3 bits chunk size, bits 3-4 read size, bit 7 no close_notify.
out=corpus/outer_records
mkdir -p "$out"
seed() { printf '%b' "$2" >"$out/$1"; }
data='\x00\x01\x00\x41\x00'                     # 256 bytes, no padding
full='\x01\x40\x00\x07\x00'                     # 16384 bytes: the most, so no padding
seed data-then-close.bin "\x03$data$full"
seed data-one-byte-chunks.bin "\x00$data\x02\x00\x10\x30\xff"
seed data-whole-records-small-reads.bin "\x06$full$data"
seed empty-data-and-user-canceled.bin "\x1b\x00\x00\x00\x00\x00\x03\x01\x5a\x00$data"
seed inner-plaintext-overflow.bin "\x04$data\x00\x40\x00\x00\x10"
seed ciphertext-overflow.bin "\x04$data\x00\x40\x00\x00\xff"
seed key-update-requested.bin "\x03$data\x04\x01$data"
seed key-update-malformed.bin "\x03\x04\x02"
seed key-updates-twice-small-chunks.bin "\x01$data\x04\x00$data\x04\x01$data"
seed fatal-alert.bin "\x05$data\x03\x02\x50\x00$data"
seed flipped-header-bit.bin "\x03$data\x07\x00\x21$data"
seed flipped-tag-bit.bin "\x04\x07\x08\x0f$data"
seed foreign-type.bin "\x03\x06\x14\x00"
seed no-content-type.bin "\x03\x06\x00\x05"
seed session-ticket-to-server.bin "\x03\x05\x0c\x04\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00$data"
seed split-handshake-message.bin "\x03\x05\x02\x18\x00\x05\x03\x00\x01\x00$data"
seed raw-garbage.bin "\x03$data\x08\x05\x17\x03\x03\x00\x00"
seed truncated-no-close.bin "\x83$data"
