#!/usr/bin/env python3
"""New tunnels over a slow edge <-> relay link: the edge reaches the relay through a forwarder that
holds every chunk DELAY_MS in each direction, so a tunnel's set-up shows its round trips. For each
tlsgate binary in turn (ROUNDS rounds, alternating), COUNT new connections one at a time through the
`h2` and the `tls` transport; prints each one's p50 and p90 time to the response (connect + both
handshakes + one GET of /small).

    sudo bench/run.sh --scenarios T2 --keep     # certificates, configs and the origin's config
    python3 bench/link_delay.py WORKDIR DELAY_MS ROUNDS COUNT TLSGATE_BIN[@preconnect=N]...

`BIN@preconnect=N` runs BIN with `preconnect: N` on the edge's `tls` relay (spare outer connections).

Loopback only; starts the origin (nginx), relay and edge from WORKDIR's configs and stops them, by PID.
Standard library only, like bench.py."""
import asyncio, json, os, re, signal, subprocess, sys, threading, time

if len(sys.argv) < 6:
    sys.exit(__doc__)
d, delay_ms, rounds, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bins = sys.argv[5:]
load = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "tlsgate-load")
D = delay_ms / 1000

async def pipe(r, w):
    q = asyncio.Queue()
    async def rd():
        while True:
            b = await r.read(65536)
            await q.put((time.monotonic() + D, b))
            if not b:
                return
    async def wr():
        while True:
            due, b = await q.get()
            dt = due - time.monotonic()
            if dt > 0:
                await asyncio.sleep(dt)
            if not b:
                try:
                    w.write_eof()
                except Exception:
                    pass
                return
            w.write(b)
            await w.drain()
    try:
        await asyncio.gather(rd(), wr())
    except Exception:
        pass

async def serve(listen_port, to_port, ready):
    """Forwards 127.0.0.1:(a free port, appended to `listen_port`) to `to_port`, delayed."""
    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", to_port)
        except Exception:
            cw.close(); return
        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
        cw.close(); uw.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    listen_port.append(srv.sockets[0].getsockname()[1])
    ready.set()
    async with srv:
        await srv.serve_forever()

def port_of(text, key):
    return int(re.search(key, text).group(1))

def main():
    relay_yaml = open(f"{d}/tlsgate-relay.yaml").read()
    edge_yaml = open(f"{d}/tlsgate-edge.yaml").read()
    relay_port = port_of(relay_yaml, r"listen: 127.0.0.1:(\d+)")
    origin_conf = open(f"{d}/origin.conf").read()
    origin_port = port_of(origin_conf, r"listen 127.0.0.1:(\d+) ssl")
    h2_port = port_of(edge_yaml, r"tun-h2.*?listen: \"127.0.0.1:(\d+)\"")
    tls_port = port_of(edge_yaml, r"tun-tls.*?listen: \"127.0.0.1:(\d+)\"")
    ready, bound = threading.Event(), []
    def run():
        asyncio.run(serve(bound, relay_port, ready))
    threading.Thread(target=run, daemon=True).start()
    if not ready.wait(5):
        sys.exit("the delaying forwarder did not start")
    edge_delayed = edge_yaml.replace(f"127.0.0.1:{relay_port}", f"127.0.0.1:{bound[0]}")
    variants = []
    for i, arg in enumerate(bins):
        b, _, opt = arg.partition("@")
        text = edge_delayed
        if opt:
            m = re.fullmatch(r"preconnect=(\d+)", opt)
            if not m:
                sys.exit(f"unknown option {opt!r} (BIN@preconnect=N)")
            text = text.replace("transport: tls}", f"transport: tls, preconnect: {m.group(1)}}}")
        path = f"{d}/edge-delayed-{i}.yaml"
        open(path, "w").write(text)
        variants.append((b, arg, path))
    origin = subprocess.Popen(["nginx", "-c", f"{d}/origin.conf", "-p", d], cwd=d,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    url = f"https://origin.bench.test:{origin_port}/small"
    env = dict(os.environ, RUST_LOG="warn")
    try:
        for rnd in range(rounds):
            for b, label, edge_conf in variants:
                r = subprocess.Popen([b, "run", "--config", f"{d}/tlsgate-relay.yaml"], cwd=d, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                e = subprocess.Popen([b, "run", "--config", edge_conf], cwd=d, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.5)
                row = []
                for name, port in (("h2", h2_port), ("tls", tls_port)):
                    out = subprocess.run([load, url, "--cacert", f"{d}/origin-ca.pem", "--connect",
                                          f"127.0.0.1:{port}", "--mode", "new", "--concurrency", "1",
                                          "-n", str(n)], capture_output=True, text=True, timeout=120)
                    j = json.loads(out.stdout)
                    lat = j["latency_us"]
                    row.append(f"{name} ok {j['requests_ok']} p50 {lat['p50']/1000:.1f} ms p90 {lat['p90']/1000:.1f} ms")
                print(f"round {rnd+1} {os.path.basename(label)}: " + " | ".join(row), flush=True)
                for p in (e, r):
                    p.send_signal(signal.SIGTERM)
                for p in (e, r):
                    try: p.wait(10)
                    except Exception: p.kill()
    finally:
        origin.send_signal(signal.SIGQUIT)
        try: origin.wait(5)
        except Exception: origin.kill()

main()
