#!/usr/bin/env bash
# Seeds corpus/client_hello from the captured vectors in crates/wire/testdata, plus each one
# re-framed into 1-byte records and into two records, so the fuzzer starts inside the
# reassembly code as well as the parser.
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/client_hello
mkdir -p "$out"
for f in ../crates/wire/testdata/*.bin; do
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
ls "$out" | wc -l
