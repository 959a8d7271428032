#!/usr/bin/env python3
"""The benchmark orchestrator (started by bench/run.sh inside private net + mount namespaces).

It writes certificates and configurations into a temporary directory, starts an nginx origin, the
tunnel pairs (tlsgate edge + relay, stunnel, HAProxy, nginx stream) and the interceptors (tlsgate,
Squid SslBump, mitmproxy), runs tlsgate-load against each, and prints Markdown tables with every
tool's figures as ratios to the direct origin measured in the same repetition. CPU is read from
/proc/PID/stat (utime + stime, the process and its children) before and after each run; memory
from VmRSS. Only processes this script started are stopped, by PID.

Standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

QUICK = os.environ.get("QUICK", "0") not in ("", "0")

# Every size, count and duration in one place; QUICK shrinks them to check the setup.
PARAMS = {
    "big_bytes": (128 << 20) if QUICK else (1 << 30),  # T1 download
    "small_bytes": 1024,  # T2/T3/T4/I1/I3 response body
    "duration": 3.0 if QUICK else 8.0,  # each timed run, seconds
    "reps": 1 if QUICK else 3,  # repetitions of the timed runs (medians reported)
    "conc_keepalive": 16,  # T3/T4/I1 connections
    "conc_new": 8,  # T2/I3 concurrent connection openers
    "names": 100 if QUICK else 1000,  # I2 distinct host names
    "hold": 500 if QUICK else 5000,  # M1 idle connections
    "hold_settle": 3.0,  # M1: seconds between "all open" and reading RSS
}
ENV_OVERRIDES = {"BENCH_BIG": ("big_bytes", int), "BENCH_DURATION": ("duration", float), "BENCH_REPS": ("reps", int),
                 "BENCH_HOLD": ("hold", int), "BENCH_NAMES": ("names", int)}
for _var, (_key, _conv) in ENV_OVERRIDES.items():
    if os.environ.get(_var):
        PARAMS[_key] = _conv(os.environ[_var])

CLK_TCK = os.sysconf("SC_CLK_TCK")
ORIGIN = "origin.bench.test"
RELAY = "relay.bench.test"
NAMES = "n{}.names.bench.test"
START_TIMEOUT = 30.0  # seconds for a server to start listening
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


# ---------------------------------------------------------------- processes, CPU and memory

def pid_tree(pid):
    """pid and all its descendants (threads are counted inside their process's stat)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return out


def cpu_seconds(pids):
    total = 0
    for root in pids:
        for p in pid_tree(root):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for root in pids:
        for p in pid_tree(root):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


class Proc:
    """A server this script started; stopped by its PID only."""

    def __init__(self, name, cmd, workdir, env=None, port=None):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full_env, cwd=workdir)
        self.pid = self.popen.pid
        if port is not None:
            self.wait_port(port)

    def wait_port(self, port):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}); see {self.log_path}:\n"
                                   + open(self.log_path, errors="replace").read()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {port} within {START_TIMEOUT}s; see {self.log_path}")

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)
        self.log.close()


# ---------------------------------------------------------------- certificates and files

def make_pki(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def ca(name, cn):
        sh("openssl", "req", "-x509", *ec, "-days", "30", "-subj", f"/CN={cn}",
           "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign",
           "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.pem")

    def leaf(name, ca_name, sans):
        sh("openssl", "req", *ec, "-subj", f"/CN={sans[0]}",
           "-addext", "subjectAltName=" + ",".join(f"DNS:{s}" for s in sans),
           "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr")
        sh("openssl", "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/{ca_name}.pem",
           "-CAkey", f"{d}/{ca_name}.key", "-days", "30", "-copy_extensions", "copy",
           "-out", f"{d}/{name}.pem")
        os.remove(f"{d}/{name}.csr")

    ca("origin-ca", "bench origin CA")
    leaf("origin", "origin-ca", [ORIGIN, "*.names.bench.test"])
    ca("relay-ca", "bench relay CA")
    leaf("relay", "relay-ca", [RELAY])
    ca("icept-ca", "bench interception CA")
    for name in os.listdir(d):
        if name.endswith(".key"):
            os.chmod(f"{d}/{name}", 0o600)
    with open(f"{d}/relay-combined.pem", "w") as out:  # HAProxy wants chain + key in one file
        out.write(open(f"{d}/relay.pem").read() + open(f"{d}/relay.key").read())
    os.chmod(f"{d}/relay-combined.pem", 0o600)


def private_hosts(d, names):
    """Replace /etc/hosts inside this mount namespace only (run.sh made it private)."""
    path = f"{d}/hosts"
    with open(path, "w") as f:
        f.write(f"127.0.0.1 localhost {ORIGIN} {RELAY}\n::1 localhost\n")
        for i in range(names):
            f.write(f"127.0.0.1 {NAMES.format(i)}\n")
    os.chmod(path, 0o644)
    sh("mount", "--bind", path, "/etc/hosts")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------- the servers

NGINX_COMMON = """daemon off;
worker_processes auto;
worker_rlimit_nofile 20000;
pid {d}/{name}.pid;
error_log {d}/{name}.err warn;
events {{ worker_connections 19000; }}
"""


# Where T1's big file lives: a tmpfs, so that every repetition reads resident memory. On this
# project's machines the page cache of a disk file is not kept: it is dropped within seconds of
# idleness (a 1 GiB file read again after 20 s spent 0.7 s of system time refilling pages instead of
# 0.1 s), and a sparse file's holes are zeroed page by page as they are read back in (`__pi_memset`
# was most of the origin's samples in a slow direct T1 run). A direct T1 repetition that met a cold
# cache ran at a third of the speed on three times the origin's CPU, and the tunnels measured right
# after it read a warm cache, which skewed T1's ratios in the tunnels' favour.
BIG_FILE_TMPFS = "/dev/shm"


def write_big_file(d, link):
    """Writes T1's big file (real pages of zeros) on a tmpfs and links `link` to it; falls back to a
    sparse file in `d` when there is no tmpfs with room for it (a container's `/dev/shm` is often
    64 MiB). Removed by `remove_big_file`."""
    size = PARAMS["big_bytes"]
    free = 0
    if os.path.isdir(BIG_FILE_TMPFS):
        st = os.statvfs(BIG_FILE_TMPFS)
        free = st.f_bavail * st.f_frsize
    if free >= size + (64 << 20):
        shm = tempfile.mkdtemp(prefix="tlsgate-bench-", dir=BIG_FILE_TMPFS)
        write(f"{d}/big-file-dir", shm)  # first, so that a failed write is cleaned up too
        os.chmod(shm, 0o755)  # nginx's workers run unprivileged
        target = f"{shm}/big"
        chunk = bytes(1 << 20)
        with open(target, "wb") as f:
            for _ in range(size // len(chunk)):
                f.write(chunk)
            f.write(bytes(size % len(chunk)))
        os.chmod(target, 0o644)
        os.symlink(target, link)
        log(f"T1's big file: {size >> 20} MiB in memory at {target}")
    else:
        with open(link, "wb") as f:
            f.truncate(size)  # sparse; read back through the page cache
        log(f"T1's big file: {size >> 20} MiB sparse file ({BIG_FILE_TMPFS} missing or has "
            f"{free >> 20} MiB free): T1's direct runs may meet a cold page cache")


def remove_big_file(d):
    try:
        with open(f"{d}/big-file-dir") as f:
            shm = f.read().strip()
    except FileNotFoundError:
        return
    if shm.startswith(BIG_FILE_TMPFS + "/tlsgate-bench-"):
        shutil.rmtree(shm, ignore_errors=True)


def start_origin(d, ports):
    www = f"{d}/www"
    os.makedirs(www, exist_ok=True)
    with open(f"{www}/small", "wb") as f:
        f.write(b"x" * PARAMS["small_bytes"])
    write_big_file(d, f"{www}/big")
    os.chmod(www, 0o755)
    conf = NGINX_COMMON.format(d=d, name="origin") + f"""
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  http2_max_requests 100000000;
  sendfile on;
  ssl_session_cache off;
  ssl_session_tickets off;
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp;
  fastcgi_temp_path {d}/nginx-tmp;
  uwsgi_temp_path {d}/nginx-tmp;
  scgi_temp_path {d}/nginx-tmp;
  server {{
    listen 127.0.0.1:{ports['origin_tls']} ssl http2 backlog=4096;
    ssl_certificate {d}/origin.pem;
    ssl_certificate_key {d}/origin.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root {www};
  }}
  server {{
    listen 127.0.0.1:{ports['origin_http']} backlog=4096;
    root {www};
  }}
}}
"""
    cfg = write(f"{d}/origin.conf", conf)
    return Proc("origin-nginx", ["nginx", "-c", cfg, "-p", d], d, port=ports["origin_tls"])


def source_limits(bin_, d):
    """Per-source limits, raised: every benchmark connection comes from 127.0.0.1 (and every
    tunnel from one edge). Only for a tlsgate that has these keys (`tlsgate check` says)."""
    keys = "  max_connections_per_source: 100000\n  max_tunnels_per_client: 100000\n"
    probe = write(f"{d}/probe-limits.yaml", "listeners: []\nlimits:\n" + keys)
    out = subprocess.run([bin_, "check", "--config", probe], capture_output=True, text=True, timeout=60)
    return "" if "unknown field" in out.stdout + out.stderr else keys


def start_tlsgate_tunnel(d, bin_, ports):
    relay = write(f"{d}/tlsgate-relay.yaml", f"""
listeners:
  - name: relay
    kind: relay
    listen: 127.0.0.1:{ports['tg_relay']}
    tls: {{cert: relay.pem, key: relay.key}}
    routes:
      - match: {ORIGIN}
        tls: 127.0.0.1:{ports['origin_tls']}
        http: 127.0.0.1:{ports['origin_http']}
allow_destinations: [127.0.0.0/8]
limits:
  max_connections: 100000
  h2_max_concurrent_streams: 100000
""" + source_limits(bin_, d))
    edge = write(f"{d}/tlsgate-edge.yaml", f"""
relays:
  - {{name: r-h2, address: "127.0.0.1:{ports['tg_relay']}", server_name: {RELAY}, ca: relay-ca.pem, transport: h2}}
  - {{name: r-tls, address: "127.0.0.1:{ports['tg_relay']}", server_name: {RELAY}, ca: relay-ca.pem, transport: tls}}
listeners:
  - {{name: tun-h2, kind: tls-passthrough, listen: "127.0.0.1:{ports['tg_edge_h2']}", relay: r-h2}}
  - {{name: tun-tls, kind: tls-passthrough, listen: "127.0.0.1:{ports['tg_edge_tls']}", relay: r-tls}}
  - {{name: web, kind: http, listen: "127.0.0.1:{ports['tg_edge_http']}", relay: r-h2}}
allow_destinations: [127.0.0.0/8]
limits:
  max_connections: 100000
""" + source_limits(bin_, d))
    env = {"RUST_LOG": "warn"}
    r = Proc("tlsgate-relay", [bin_, "run", "--config", relay], d, env, port=ports["tg_relay"])
    e = Proc("tlsgate-edge", [bin_, "run", "--config", edge], d, env, port=ports["tg_edge_http"])
    return [e, r]


def start_stunnel(d, ports):
    a = write(f"{d}/stunnel-a.conf", f"""foreground = yes
pid =
syslog = no
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[a]
client = yes
accept = 127.0.0.1:{ports['st_a']}
connect = 127.0.0.1:{ports['st_b']}
sni = {RELAY}
verifyChain = yes
CAfile = {d}/relay-ca.pem
checkHost = {RELAY}
""")
    b = write(f"{d}/stunnel-b.conf", f"""foreground = yes
pid =
syslog = no
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[b]
accept = 127.0.0.1:{ports['st_b']}
connect = 127.0.0.1:{ports['origin_tls']}
cert = {d}/relay.pem
key = {d}/relay.key
""")
    pb = Proc("stunnel-b", ["stunnel4", b], d, port=ports["st_b"])
    pa = Proc("stunnel-a", ["stunnel4", a], d, port=ports["st_a"])
    return [pa, pb]


HAPROXY_COMMON = """global
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
"""


def start_haproxy(d, ports):
    a = write(f"{d}/haproxy-a.cfg", HAPROXY_COMMON + f"""
frontend fa
  bind 127.0.0.1:{ports['hp_a']}
  default_backend ba
backend ba
  server relay 127.0.0.1:{ports['hp_b']} ssl verify required ca-file {d}/relay-ca.pem sni str({RELAY}) verifyhost {RELAY}
""")
    b = write(f"{d}/haproxy-b.cfg", HAPROXY_COMMON + f"""
frontend fb
  bind 127.0.0.1:{ports['hp_b']} ssl crt {d}/relay-combined.pem
  default_backend bb
backend bb
  server origin 127.0.0.1:{ports['origin_tls']}
""")
    pb = Proc("haproxy-b", ["haproxy", "-db", "-f", b], d, port=ports["hp_b"])
    pa = Proc("haproxy-a", ["haproxy", "-db", "-f", a], d, port=ports["hp_a"])
    return [pa, pb]


def start_nginx_pair(d, ports):
    head = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
    a = write(f"{d}/nginx-a.conf", head + NGINX_COMMON.format(d=d, name="nginx-a") + f"""
stream {{
  server {{
    listen 127.0.0.1:{ports['ng_a']} backlog=4096;
    proxy_pass 127.0.0.1:{ports['ng_b']};
    proxy_ssl on;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate {d}/relay-ca.pem;
    proxy_ssl_name {RELAY};
    proxy_ssl_server_name on;
    proxy_timeout 10m;
  }}
}}
""")
    b = write(f"{d}/nginx-b.conf", head + NGINX_COMMON.format(d=d, name="nginx-b") + f"""
stream {{
  server {{
    listen 127.0.0.1:{ports['ng_b']} ssl backlog=4096;
    ssl_certificate {d}/relay.pem;
    ssl_certificate_key {d}/relay.key;
    proxy_pass 127.0.0.1:{ports['origin_tls']};
    proxy_timeout 10m;
  }}
}}
""")
    pb = Proc("nginx-b", ["nginx", "-c", b, "-p", d], d, port=ports["ng_b"])
    pa = Proc("nginx-a", ["nginx", "-c", a, "-p", d], d, port=ports["ng_a"])
    return [pa, pb]


def start_tlsgate_intercept(d, bin_, ports):
    cfg = write(f"{d}/tlsgate-intercept.yaml", f"""
listeners:
  - name: proxy
    kind: intercept
    listen: 127.0.0.1:{ports['tg_icept']}
    ca: {{cert: icept-ca.pem, key: icept-ca.key}}
    upstream_ca: origin-ca.pem
    certs: {{cache_size: 100000}}
    default_action: bump
allow_destinations: [127.0.0.0/8]
limits:
  max_connections: 100000
""" + source_limits(bin_, d))
    log = os.environ.get("BENCH_TLSGATE_LOG", "warn")  # e.g. tlsgate_proxy::intercept=debug
    return [Proc("tlsgate-intercept", [bin_, "run", "--config", cfg], d, {"RUST_LOG": log},
                 port=ports["tg_icept"])]


def start_squid(d, ports):
    sd = f"{d}/squid"
    os.makedirs(sd, exist_ok=True)
    for name in ("icept-ca.pem", "icept-ca.key", "origin-ca.pem"):
        with open(f"{d}/{name}", "rb") as src, open(f"{sd}/{name}", "wb") as dst:
            dst.write(src.read())
    db = f"{sd}/ssl_db"
    shutil.rmtree(db, ignore_errors=True)  # a restart (M1) starts with an empty certificate store
    sh("/usr/lib/squid/security_file_certgen", "-c", "-s", db, "-M", "64MB")
    sh("chown", "-R", "proxy:proxy", sd)
    conf = write(f"{sd}/squid.conf", f"""
http_port 127.0.0.1:{ports['squid']} ssl-bump tls-cert={sd}/icept-ca.pem tls-key={sd}/icept-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=64MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s {db} -M 64MB
sslcrtd_children 8 startup=2 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={sd}/origin-ca.pem
http_access allow all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log {sd}/cache.log
pid_filename {sd}/squid.pid
coredump_dir {sd}
max_filedescriptors 20000
cache_effective_user proxy
hosts_file /etc/hosts
shutdown_lifetime 1 seconds
""")
    return [Proc("squid", ["/usr/sbin/squid", "-N", "-f", conf], d, port=ports["squid"])]


def start_mitmproxy(d, venv, ports):
    conf = f"{d}/mitm"
    os.makedirs(conf, exist_ok=True)
    p = Proc("mitmproxy", [f"{venv}/bin/mitmdump", "--listen-host", "127.0.0.1",
                           "--listen-port", str(ports["mitm"]), "--set", f"confdir={conf}",
                           "--set", f"ssl_verify_upstream_trusted_ca={d}/origin-ca.pem",
                           "--set", "flow_detail=0", "--set", "termlog_verbosity=warn"],
             d, port=ports["mitm"])
    return [p]


# ---------------------------------------------------------------- load

def interrupt(p, within):
    """SIGINT to a `perf` process, so it writes its output; killed if it takes longer than `within`.
    True when it finished by itself."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(within)
        return True
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(STOP_TIMEOUT)
        return False


class Bench:
    def __init__(self, d, root, venv):
        self.d = d
        self.load_bin = f"{root}/target/release/tlsgate-load"
        # BENCH_TLSGATE: another tlsgate binary (e.g. a build being profiled).
        self.tlsgate = os.environ.get("BENCH_TLSGATE") or f"{root}/target/release/tlsgate"
        self.venv = venv
        self.ports = {k: free_port() for k in (
            "origin_tls", "origin_http", "tg_relay", "tg_edge_h2", "tg_edge_tls", "tg_edge_http",
            "st_a", "st_b", "hp_a", "hp_b", "ng_a", "ng_b", "tg_icept", "squid", "mitm")}
        self.results = []  # dicts: scenario, tool, rep, + load report + cpu_s
        self.scenarios = None  # None: all; else a set of ids ("T3", "I2", "M1")
        self.perf_dir = None  # set: record a CPU profile of tlsgate in each of its timed runs
        self.stat_events = {}  # perf event -> the figure it counts (`--syscalls`, `--allocs`)
        self.limits = {}

    def wanted(self, scenario):
        return self.scenarios is None or scenario.split()[0] in self.scenarios

    def load(self, args, duration):
        cmd = [self.load_bin, *args, "--duration", str(duration)]
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=duration + 60)
        except subprocess.TimeoutExpired:
            return {"failed": "timeout"}
        lines = out.stdout.decode().strip().splitlines()
        if not lines:
            return {"failed": out.stderr.decode().strip()[-300:] or f"exit {out.returncode}"}
        return json.loads(lines[-1])

    def measure(self, scenario, tool, rep, procs, args, duration=None):
        if not self.wanted(scenario):
            return None
        duration = duration or PARAMS["duration"]
        pids = [p.pid for p in procs]
        perf = self.start_perf(scenario, tool, rep, pids)
        stat = self.start_stat(pids)
        c0 = cpu_seconds(pids)
        r = self.load(args, duration)
        r["cpu_s"] = cpu_seconds(pids) - c0
        if stat:
            r["kernel"] = self.stop_stat(*stat)
        if perf:
            interrupt(perf, 60)
        r.update(scenario=scenario, tool=tool, rep=rep)
        self.results.append(r)
        errs = r.get("errors") or {}
        log(f"{scenario:<8} {tool:<16} rep {rep}: "
            + (f"FAILED {r['failed']}" if "failed" in r else
               f"{r['requests_ok']} ok, {r['req_per_s']:.0f}/s, {r['bytes_per_s'] / 1e6:.1f} MB/s, "
               f"p50 {r['latency_us']['p50']} µs, p99 {r['latency_us']['p99']} µs, cpu {r['cpu_s']:.2f} s"
               + (f", errors {errs}" if errs else "")))
        return r

    def start_perf(self, scenario, tool, rep, pids):
        """`perf record` (software cpu-clock, DWARF call graphs) of tlsgate's processes."""
        if not self.perf_dir or not tool.startswith("tlsgate"):
            return None
        out = f"{self.perf_dir}/{scenario}-{tool}-{rep}.data".replace(" ", "_")
        # BENCH_PERF_EVENT: sample another event instead, each occurrence (with `--allocs`:
        # probe_libc:malloc, to see who allocates).
        event = os.environ.get("BENCH_PERF_EVENT")
        sampling = ["-e", event, "-c", "1"] if event else ["-e", "cpu-clock", "-F", "499"]
        cmd = ["perf", "record", "-q", *sampling, "--call-graph", "dwarf,16384",
               "-p", ",".join(str(p) for p in pids), "-o", out]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let perf attach before the load starts
        return p

    # What a unit of work costs in kernel crossings: every system call, every time a thread of the
    # measured processes is switched out (blocking or preempted), every wake-up it issues.
    # Minor page faults: memory the allocator gave back to the kernel and touched again (each
    # fault zeroes a fresh page), which CPU profiles show only as scattered kernel time.
    STAT_EVENTS = {"raw_syscalls:sys_enter": "syscalls", "sched:sched_switch": "switches",
                   "sched:sched_wakeup": "wakeups", "minor-faults": "faults"}
    # `--allocs`: calls into the C allocator (uprobes on libc's entry points, set up by
    # `add_alloc_probes`), summed as one figure. Deterministic where CPU time is noisy: what a
    # change to the data path's allocations does shows here first.
    ALLOC_EVENTS = {"probe_libc:malloc": "allocs", "probe_libc:calloc": "allocs",
                    "probe_libc:realloc": "allocs"}
    FIGURES = ("syscalls", "switches", "wakeups", "faults", "allocs")

    def start_stat(self, pids):
        """`perf stat` counting `stat_events` over every process of the tool (all their threads)."""
        if not self.stat_events:
            return None
        every = sorted({p for root in pids for p in pid_tree(root)})
        out = f"{self.d}/perf-stat.csv"
        cmd = ["perf", "stat", "-x", ",", "-o", out, "-e", ",".join(self.stat_events),
               "-p", ",".join(str(p) for p in every)]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # let perf attach before the load starts
        return p, out

    def stop_stat(self, p, out):
        if not interrupt(p, 30):
            return None
        counts = {}
        with open(out) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[2] in self.stat_events and fields[0].isdigit():
                    what = self.stat_events[fields[2]]
                    counts[what] = counts.get(what, 0) + int(fields[0])
        return counts or None

    def hold(self, scenario, tool, procs, args):
        """M1: open PARAMS['hold'] connections, read the tool's RSS before and while they idle."""
        pids = [p.pid for p in procs]
        before = rss_kib(pids)
        n = PARAMS["hold"]
        cmd = [self.load_bin, *args, "--hold", str(n), "--concurrency", "50",
               "--duration", "600", "--timeout", "30"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        r = {"scenario": scenario, "tool": tool, "rep": 0}
        try:
            line = read_line_within(p.stdout, 600)
            if not line:
                r["failed"] = "no report from tlsgate-load --hold"
            else:
                r.update(json.loads(line))
                time.sleep(PARAMS["hold_settle"])
                r["rss_before_kib"] = before
                r["rss_held_kib"] = rss_kib(pids)
                held = max(r.get("held") or 0, 1)
                r["kib_per_conn"] = (r["rss_held_kib"] - before) / held
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(STOP_TIMEOUT)
        self.results.append(r)
        log(f"{scenario:<8} {tool:<16}: "
            + (f"FAILED {r['failed']}" if "failed" in r else
               f"held {r.get('held')}, RSS {before} -> {r['rss_held_kib']} KiB, "
               f"{r['kib_per_conn']:.1f} KiB/conn, errors {r.get('errors')}"))
        time.sleep(2)  # let the closed connections drain before the next tool
        return r


def read_line_within(stream, seconds):
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and b"\n" not in buf:
        if not sel.select(max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n", 1)[0].decode() if b"\n" in buf else ""


# ---------------------------------------------------------------- the scenarios

def tunnel_tools(b, procs):
    """(tool name, processes measured, entry port) for each tunnel."""
    p = b.ports
    return [
        ("tlsgate h2", procs["tlsgate"], p["tg_edge_h2"]),
        ("tlsgate tls", procs["tlsgate"], p["tg_edge_tls"]),
        ("stunnel", procs["stunnel"], p["st_a"]),
        ("haproxy", procs["haproxy"], p["hp_a"]),
        ("nginx", procs["nginx"], p["ng_a"]),
    ]


def intercept_tools(b, procs):
    p = b.ports
    return [
        ("tlsgate", procs["tlsgate-intercept"], p["tg_icept"], f"{b.d}/icept-ca.pem", True),
        ("squid", procs["squid"], p["squid"], f"{b.d}/icept-ca.pem", False),
        ("mitmproxy", procs["mitmproxy"], p["mitm"], f"{b.d}/mitm/mitmproxy-ca-cert.pem", True),
    ]


def run_timed(b, procs, rep):
    p, d = b.ports, b.d
    origin = [procs["origin"][0]]
    url_small = f"https://{ORIGIN}:{p['origin_tls']}/small"
    url_big = f"https://{ORIGIN}:{p['origin_tls']}/big"
    ca = ["--cacert", f"{d}/origin-ca.pem"]
    ka = ["--concurrency", str(PARAMS["conc_keepalive"])]
    new = ["--concurrency", str(PARAMS["conc_new"]), "--mode", "new"]
    direct = ["--connect", f"127.0.0.1:{p['origin_tls']}"]
    big_deadline = max(120.0, PARAMS["big_bytes"] / 20e6)
    ka_big = ["-n", "1", "--timeout", str(big_deadline)]

    # T1: one big download; T2: new end-to-end TLS connections; T3: keep-alive requests.
    b.measure("T1", "direct", rep, origin, [url_big, *ca, *direct, *ka_big], big_deadline)
    for name, pr, port in tunnel_tools(b, procs):
        b.measure("T1", name, rep, pr, [url_big, *ca, "--connect", f"127.0.0.1:{port}", *ka_big],
                  big_deadline)
    b.measure("T2", "direct", rep, origin, [url_small, *ca, *direct, *new])
    for name, pr, port in tunnel_tools(b, procs):
        b.measure("T2", name, rep, pr, [url_small, *ca, "--connect", f"127.0.0.1:{port}", *new])
    b.measure("T3", "direct", rep, origin, [url_small, *ca, *direct, *ka])
    for name, pr, port in tunnel_tools(b, procs):
        b.measure("T3", name, rep, pr, [url_small, *ca, "--connect", f"127.0.0.1:{port}", *ka])

    # T4: plain HTTP into the edge's http listener (forwarded over h2) vs the origin's port 80.
    url_http = f"http://{ORIGIN}/small"
    b.measure("T4", "direct", rep, origin, [url_http, "--connect", f"127.0.0.1:{p['origin_http']}", *ka])
    b.measure("T4", "tlsgate h2", rep, procs["tlsgate"],
              [url_http, "--connect", f"127.0.0.1:{p['tg_edge_http']}", *ka])

    # I1 (HTTP/1.1 and HTTP/2 keep-alive) and I3 (new connections) through the interceptors.
    for version in ("1", "2"):
        scen = f"I1 h{version}"
        b.measure(scen, "direct", rep, origin, [url_small, *ca, *direct, *ka, "--http", version])
        for name, pr, port, icept_ca, has_h2 in intercept_tools(b, procs):
            if version == "2" and not has_h2:
                continue
            b.measure(scen, name, rep, pr, [url_small, "--cacert", icept_ca, "--proxy",
                                            f"127.0.0.1:{port}", *ka, "--http", version])
    b.measure("I3", "direct", rep, origin, [url_small, *ca, *direct, *new])
    for name, pr, port, icept_ca, _ in intercept_tools(b, procs):
        b.measure("I3", name, rep, pr, [url_small, "--cacert", icept_ca, "--proxy",
                                        f"127.0.0.1:{port}", *new])


def run_limits(b, procs):
    """What one core can do here: openssl speed for the primitives, and a plain-HTTP download."""
    if not b.wanted("L"):
        return
    def speed(*args):
        out = subprocess.run(["openssl", "speed", "-seconds", "2", *args], capture_output=True,
                             text=True, timeout=120).stdout.strip().splitlines()
        return out[-1] if out else "?"
    b.limits = {
        "aes-128-gcm (16 KiB blocks, bytes/s)": speed("-evp", "aes-128-gcm", "-bytes", "16384"),
        "ecdsa p256 sign/verify": speed("ecdsap256"),
        "x25519": speed("ecdhx25519"),
    }
    url = f"http://{ORIGIN}/big"
    deadline = max(120.0, PARAMS["big_bytes"] / 20e6)
    b.measure("L http", "direct", 0, [procs["origin"][0]],
              [url, "--connect", f"127.0.0.1:{b.ports['origin_http']}", "-n", "1", "--timeout",
               str(deadline)], deadline)


def run_minting(b, procs):
    """I2: first request to each of PARAMS['names'] never-seen names, then the same names again."""
    n = PARAMS["names"]
    url = f"https://n.names.bench.test:{b.ports['origin_tls']}/small"
    for name, pr, port, icept_ca, _ in intercept_tools(b, procs):
        args = [url, "--cacert", icept_ca, "--proxy", f"127.0.0.1:{port}", "--mode", "new",
                "--names", NAMES, "--name-count", str(n), "-n", str(n), "--concurrency", "1"]
        deadline = max(60.0, n * 0.5)
        b.measure("I2 first", name, 0, pr, args, deadline)
        b.measure("I2 repeat", name, 0, pr, args, deadline)


def run_memory(b, start):
    """M1: each tool restarted fresh, then N idle connections held through it."""
    if not b.wanted("M1"):
        return
    p, d = b.ports, b.d
    url = f"https://{ORIGIN}:{p['origin_tls']}/small"
    ca = ["--cacert", f"{d}/origin-ca.pem"]
    for key, tool, port in (("tlsgate", "tlsgate h2", "tg_edge_h2"), ("tlsgate", "tlsgate tls", "tg_edge_tls"),
                            ("stunnel", "stunnel", "st_a"), ("haproxy", "haproxy", "hp_a"),
                            ("nginx", "nginx", "ng_a")):
        procs = start(key)
        try:
            b.hold("M1 tunnel", tool, procs, [url, *ca, "--connect", f"127.0.0.1:{p[port]}"])
        finally:
            for pr in procs:
                pr.stop()
    for key, port, ca_file in (("tlsgate-intercept", "tg_icept", f"{d}/icept-ca.pem"),
                               ("squid", "squid", f"{d}/icept-ca.pem"),
                               ("mitmproxy", "mitm", f"{d}/mitm/mitmproxy-ca-cert.pem")):
        procs = start(key)
        try:
            b.hold("M1 intercept", key.replace("-intercept", ""), procs,
                   [url, "--cacert", ca_file, "--proxy", f"127.0.0.1:{p[port]}"])
        finally:
            for pr in procs:
                pr.stop()


# ---------------------------------------------------------------- the tables

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(results):
    """{(scenario, tool): {...medians...}} with ratios to the same rep's direct run."""
    by = {}
    for r in results:
        by.setdefault((r["scenario"], r["tool"]), []).append(r)
    direct = {(r["scenario"], r["rep"]): r for r in results if r["tool"] == "direct" and "failed" not in r}
    out = {}
    for (scen, tool), runs in by.items():
        ok = [r for r in runs if "failed" not in r]
        if not ok:
            out[(scen, tool)] = {"failed": runs[0].get("failed", "?")}
            continue
        s = {"errors": sum(sum((r.get("errors") or {}).values()) for r in ok), "runs": len(ok)}
        if scen.startswith("M1"):
            s["kib_per_conn"] = med([r.get("kib_per_conn") for r in ok])
            s["held"] = med([r.get("held") for r in ok])
            out[(scen, tool)] = s
            continue
        s["req_per_s"] = med([r["req_per_s"] for r in ok])
        s["bytes_per_s"] = med([r["bytes_per_s"] for r in ok])
        s["p50"] = med([r["latency_us"]["p50"] for r in ok])
        s["p99"] = med([r["latency_us"]["p99"] for r in ok])
        s["cpu_per_req_us"] = med([r["cpu_s"] / r["requests_ok"] * 1e6 for r in ok if r["requests_ok"]])
        s["cpu_per_gb"] = med([r["cpu_s"] / (r["bytes"] / 1e9) for r in ok if r["bytes"]])
        s["cpu_s"] = med([r["cpu_s"] for r in ok])
        for what in Bench.FIGURES:
            s[f"{what}_per_req"] = med([r["kernel"][what] / r["requests_ok"] for r in ok
                                        if (r.get("kernel") or {}).get(what) is not None and r["requests_ok"]])
        key = "bytes_per_s" if scen == "T1" else "req_per_s"
        ratios = []
        for r in ok:
            dr = direct.get((scen, r["rep"]))
            if dr and dr[key]:
                ratios.append(r[key] / dr[key])
        s["ratio"] = med(ratios)
        dr_runs = [direct[(scen, r["rep"])] for r in ok if (scen, r["rep"]) in direct]
        if dr_runs:
            s["p99_minus_direct"] = med([r["latency_us"]["p99"] - d["latency_us"]["p99"]
                                         for r, d in zip(ok, dr_runs)])
        out[(scen, tool)] = s
    return out


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def cell(s, scen):
    if s is None:
        return "–"
    if "failed" in s:
        return "failed"
    err = f" ⚠{s['errors']} err" if s.get("errors") else ""
    if scen.startswith("M1"):
        return f"{fmt(s['kib_per_conn'], '.1f')} KiB/conn{err}"
    if scen == "T1":
        return (f"**{fmt(s['ratio'], '.2f')}** · {s['bytes_per_s'] / 1e6:.0f} MB/s · "
                f"{fmt(s['cpu_per_gb'], '.2f')} CPU-s/GB{err}")
    if scen in ("T2", "I3"):
        return (f"**{fmt(s['ratio'], '.2f')}** · {s['req_per_s']:.0f} conn/s · "
                f"{fmt(s['cpu_per_req_us'] and s['cpu_per_req_us'] / 1000, '.2f')} ms CPU/conn{err}")
    if scen.startswith("I2"):
        return f"p50 {fmt(s['p50'], '.0f')} µs · {fmt(s['cpu_per_req_us'] and s['cpu_per_req_us'] / 1000, '.2f')} ms CPU/conn{err}"
    return (f"**{fmt(s['ratio'], '.2f')}** · {s['req_per_s']:.0f} req/s · p50 {fmt(s['p50'], '.0f')} µs · "
            f"p99 {fmt(s['p99'], '.0f')} µs · {fmt(s['cpu_per_req_us'], '.0f')} µs CPU/req{err}")


def table(summary, scenarios, tools):
    lines = ["| scenario | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for scen in scenarios:
        lines.append(f"| {scen} | " + " | ".join(cell(summary.get((scen, t)), scen) for t in tools) + " |")
    return "\n".join(lines)


def i2_rows(summary, tools):
    lines = ["| I2 (first-seen name vs repeat) | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    extra, cpu = [], []
    for t in tools:
        first, rep = summary.get(("I2 first", t)), summary.get(("I2 repeat", t))
        if not first or not rep:
            extra.append("–")
            cpu.append("–")
            continue
        if "failed" in first or "failed" in rep:
            extra.append("failed")
            cpu.append("failed")
            continue
        extra.append(f"{(first['p50'] - rep['p50']) / 1000:.2f} ms (p50 {first['p50'] / 1000:.2f} vs {rep['p50'] / 1000:.2f} ms)")
        cpu.append(f"{(first['cpu_s'] - rep['cpu_s']) / PARAMS['names'] * 1000:.2f} ms")
    lines.append("| extra latency of a first-seen name (p50) | " + " | ".join(extra) + " |")
    lines.append("| extra CPU per new name | " + " | ".join(cpu) + " |")
    return "\n".join(lines)


FIGURE_TEXT = {
    "syscalls": "system calls",
    "switches": "context switches (a thread of the tool switched out: blocked or preempted)",
    "wakeups": "wake-ups it issued",
    "faults": "minor page faults",
    "allocs": "calls into the C allocator (malloc, calloc, realloc)",
}


def kernel_rows(summary, scenarios, tools, figures):
    """`--syscalls` / `--allocs`: the counted figures per request (T1: per MB), joined by " · "."""
    lines = ["| per request (T1: per MB) | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for scen in scenarios:
        cells = []
        for t in tools:
            s = summary.get((scen, t))
            if not s or all(s.get(f"{w}_per_req") is None for w in figures):
                cells.append("–")
                continue
            per = 1.0
            if scen == "T1" and s.get("bytes_per_s"):
                per = s["req_per_s"] / s["bytes_per_s"] * 1e6  # requests per MB
            cells.append(" · ".join(f"{fmt(s[f'{w}_per_req'] and s[f'{w}_per_req'] * per, '.2f')}"
                                    for w in figures))
        lines.append(f"| {scen} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_alloc_probes():
    """Uprobes on the C library's allocator entry points (`--allocs`); removed by `del_alloc_probes`.
    They count every process's calls into that library's allocator while they exist."""
    libc = None
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if os.path.basename(path).startswith("libc.so"):
                libc = path
                break
    if not libc:
        sys.exit("--allocs: no libc.so mapped in this Python; cannot place the probes")
    del_alloc_probes()
    for fn in ("malloc", "calloc", "realloc"):
        subprocess.run(["perf", "probe", "-q", "-x", libc, "--add", fn], check=True)


def del_alloc_probes():
    subprocess.run(["perf", "probe", "-q", "--del", "probe_libc:*"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def targets(summary):
    """Every target of issue 6 with the measured value; met or missed as measured."""
    rows = []

    def g(scen, tool, key):
        s = summary.get((scen, tool))
        return None if not s or "failed" in s else s.get(key)

    def row(what, value, ok):
        rows.append(f"| {what} | {value} | {'met' if ok else 'MISSED' if ok is False else 'not measured'} |")

    def check(what, val, pred, spec=".2f", unit=""):
        row(what, "–" if val is None else f"{format(val, spec)}{unit}", None if val is None else pred(val))

    for tr in ("tlsgate h2", "tlsgate tls"):
        check(f"T1 {tr}: ≥ 0.75 of direct", g("T1", tr, "ratio"), lambda v: v >= 0.75)
        check(f"T1 {tr}: ≤ 1.2 CPU-s/GB (edge + relay)", g("T1", tr, "cpu_per_gb"), lambda v: v <= 1.2)
    check("T2 tlsgate h2: ≥ 0.8 of direct", g("T2", "tlsgate h2", "ratio"), lambda v: v >= 0.8)
    v = g("T2", "tlsgate h2", "cpu_per_req_us")
    check("T2 tlsgate h2: ≤ 0.5 ms CPU per connection", v and v / 1000, lambda v: v <= 0.5, ".3f", " ms")
    for tr in ("tlsgate h2", "tlsgate tls"):
        check(f"T3 {tr}: ≥ 0.6 of direct", g("T3", tr, "ratio"), lambda v: v >= 0.6)
        check(f"T3 {tr}: ≤ 35 µs CPU per request", g("T3", tr, "cpu_per_req_us"), lambda v: v <= 35, ".1f", " µs")
    check("T4: ≥ 0.5 of direct", g("T4", "tlsgate h2", "ratio"), lambda v: v >= 0.5)
    v = g("T4", "tlsgate h2", "p99_minus_direct")
    check("T4: p99 within 2 ms of direct", v and v / 1000, lambda v: v <= 2.0, ".2f", " ms")
    for ver in ("1", "2"):
        scen = f"I1 h{ver}"
        check(f"I1 HTTP/{ver}: ≥ 0.55 of direct", g(scen, "tlsgate", "ratio"), lambda v: v >= 0.55)
        t, sq, mi = (g(scen, x, "req_per_s") for x in ("tlsgate", "squid", "mitmproxy"))
        if ver == "1":
            check("I1 HTTP/1: ≥ 3× Squid", t and sq and t / sq, lambda v: v >= 3, ".1f", "×")
        check(f"I1 HTTP/{ver}: ≥ 50× mitmproxy", t and mi and t / mi, lambda v: v >= 50, ".1f", "×")
        check(f"I1 HTTP/{ver}: ≤ 45 µs CPU per request", g(scen, "tlsgate", "cpu_per_req_us"),
              lambda v: v <= 45, ".1f", " µs")
    f, r = summary.get(("I2 first", "tlsgate")), summary.get(("I2 repeat", "tlsgate"))
    if f and r and "failed" not in f and "failed" not in r:
        check("I2: first-seen extra latency ≤ 0.5 ms p50", (f["p50"] - r["p50"]) / 1000, lambda v: v <= 0.5,
              ".2f", " ms")
        check("I2: ≤ 5 ms CPU per new name", (f["cpu_s"] - r["cpu_s"]) / PARAMS["names"] * 1000,
              lambda v: v <= 5, ".2f", " ms")
    else:
        row("I2", "failed" if f or r else "–", None)
    t, sq = g("I3", "tlsgate", "req_per_s"), g("I3", "squid", "req_per_s")
    check("I3: ≥ 2× Squid's new bumped connections/s", t and sq and t / sq, lambda v: v >= 2, ".1f", "×")
    for tr in ("tlsgate h2", "tlsgate tls"):
        check(f"M1 {tr}: ≤ 32 KiB per idle tunnelled connection", g("M1 tunnel", tr, "kib_per_conn"),
              lambda v: v <= 32, ".1f", " KiB")
    check("M1 interceptor: ≤ 64 KiB per idle intercepted connection",
          g("M1 intercept", "tlsgate", "kib_per_conn"), lambda v: v <= 64, ".1f", " KiB")
    return "\n".join(["| target | measured | |", "|---|---|---|", *rows])


# The ratio targets of issue 6 for which the whole machine is the limit (every scenario but T1).
RATIO_TARGETS = [("T2", "tlsgate h2", 0.8), ("T3", "tlsgate h2", 0.6), ("T3", "tlsgate tls", 0.6),
                 ("T4", "tlsgate h2", 0.5), ("I1 h1", "tlsgate", 0.55), ("I1 h2", "tlsgate", 0.55)]


def budget_rows(summary):
    """The ratio targets as CPU budgets. Client, origin and tool share the machine's cores, which the
    direct run already keeps busy; through the tool, the client and the origin do about the same
    work per request, and the tool's CPU comes on top. So with D = cores / direct rate (machine time
    per request of the direct run) and G the tool's CPU per request, the ratio cannot exceed
    D / (D + G), and a target r leaves the tool (1/r - 1) × D."""
    cores = os.cpu_count() or 1
    lines = ["| target | D: direct machine time per request | budget for the tool | tool's CPU per request (G) "
             "| ceiling D / (D + G) | measured ratio |", "|---|---|---|---|---|---|"]
    for scen, tool, r in RATIO_TARGETS:
        d, s = summary.get((scen, "direct")), summary.get((scen, tool))
        what = f"{scen} {tool} ≥ {r}"
        if (not d or not s or "failed" in d or "failed" in s or not d.get("req_per_s")
                or s.get("cpu_per_req_us") is None):
            lines.append(f"| {what} | – | – | – | – | – |")
            continue
        big_d = cores / d["req_per_s"] * 1e6
        g = s["cpu_per_req_us"]
        lines.append(f"| {what} | {big_d:.1f} µs | {(1 / r - 1) * big_d:.1f} µs | {g:.1f} µs | "
                     f"{big_d / (big_d + g):.2f} | {fmt(s['ratio'], '.2f')} |")
    return "\n".join(lines)


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = open("/proc/meminfo").readline().split()[1]
    return f"{os.cpu_count()} CPUs ({model}), {int(mem) // 1024} MiB RAM, kernel {os.uname().release}"


def limits_text(b, summary):
    if not b.limits:
        return "(not measured)"
    lines = [f"- openssl speed {k}: `{v}`" for k, v in b.limits.items()]
    s = summary.get(("L http", "direct"))
    if s and "failed" not in s:
        lines.append(f"- plain HTTP download of the big file from the origin (loopback TCP + sendfile): "
                     f"{s['bytes_per_s'] / 1e6:.0f} MB/s")
    return "\n".join(lines)


def report(summary, started, b):
    tun_tools = ["direct", "tlsgate h2", "tlsgate tls", "stunnel", "haproxy", "nginx"]
    icept_tools = ["direct", "tlsgate", "squid", "mitmproxy"]
    figures = [w for w in Bench.FIGURES if w in b.stat_events.values()]
    out = [
        f"# tlsgate benchmark ({'QUICK' if QUICK else 'full'} mode)",
        "",
        f"- machine: {machine()}",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{(time.time() - started) / 60:.1f} min; load average at start {open('/proc/loadavg').read().split()[0]}",
        f"- parameters: {json.dumps(PARAMS)}",
        "- cells: **ratio to direct (same repetition, median)** · absolute figure · CPU of the measured "
        "processes (tunnel: both ends; interceptor: the proxy and its helpers; direct: the origin)",
        "",
        "## Tunnel (T1–T4)",
        "",
        table(summary, ["T1", "T2", "T3", "T4"], tun_tools),
        "",
        "## Interception (I1, I3)",
        "",
        table(summary, ["I1 h1", "I1 h2", "I3"], icept_tools),
        "",
        i2_rows(summary, icept_tools[1:]),
        "",
        "## Memory per idle connection (M1)",
        "",
        table(summary, ["M1 tunnel"], tun_tools[1:]),
        "",
        table(summary, ["M1 intercept"], icept_tools[1:]),
        "",
        *(["## Kernel crossings and allocations (`--syscalls`, `--allocs`)", "",
           "Cells: " + " · ".join(FIGURE_TEXT[w] for w in figures) + ", per request (T2, I3: per "
           "connection; T1: per MB), counted by `perf stat` over all the tool's processes (direct: the "
           "origin's). Counting adds overhead (an allocator probe a great deal): compare these runs with "
           "each other, not with runs that do not count.", "",
           kernel_rows(summary, ["T1", "T2", "T3", "T4"], tun_tools, figures), "",
           kernel_rows(summary, ["I1 h1", "I1 h2", "I3"], icept_tools, figures), ""] if figures else []),
        "## Limits of this machine (one core)",
        "",
        limits_text(b, summary),
        "",
        "## Targets (issue 6)",
        "",
        targets(summary),
        "",
        "## The ratio targets as CPU budgets",
        "",
        f"The client, the origin and the tool share this machine's {os.cpu_count()} cores, which the direct "
        "run already keeps busy; through the tool the client and the origin do about the same work per "
        "request and the tool's CPU comes on top. So a ratio cannot exceed D / (D + G), where D is the "
        "machine time per request of the direct run (cores / its rate) and G the tool's CPU per request, "
        "and a ratio target r leaves the tool (1/r − 1) × D (T2: per connection).",
        "",
        budget_rows(summary),
    ]
    return "\n".join(out)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--only", default="timed,minting,memory",
                    help="comma-separated parts to run: timed, minting, memory")
    ap.add_argument("--scenarios", default="", help="comma-separated ids to run (T1,T2,T3,T4,I1,I2,I3,M1); default all")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--perf", default="", help="directory for perf profiles of tlsgate's timed runs")
    ap.add_argument("--syscalls", action="store_true",
                    help="count system calls, context switches and wake-ups per unit of work (perf stat)")
    ap.add_argument("--allocs", action="store_true",
                    help="count calls into the C allocator per unit of work (perf stat on uprobes)")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    started = time.time()
    d = tempfile.mkdtemp(prefix="tlsgate-bench-")
    os.chmod(d, 0o755)  # nginx workers and Squid run as unprivileged users
    log(f"work directory {d}; parameters {PARAMS}")
    make_pki(d)
    private_hosts(d, PARAMS["names"])
    b = Bench(d, args.root, args.venv)
    if args.scenarios:
        b.scenarios = set(args.scenarios.split(","))
    if args.perf:
        os.makedirs(args.perf, exist_ok=True)
        b.perf_dir = args.perf
    if args.syscalls:
        b.stat_events.update(Bench.STAT_EVENTS)
    if args.allocs:
        add_alloc_probes()
        b.stat_events.update(Bench.ALLOC_EVENTS)
    running = {}

    def start(key):
        starters = {
            "origin": lambda: [start_origin(d, b.ports)],
            "tlsgate": lambda: start_tlsgate_tunnel(d, b.tlsgate, b.ports),
            "stunnel": lambda: start_stunnel(d, b.ports),
            "haproxy": lambda: start_haproxy(d, b.ports),
            "nginx": lambda: start_nginx_pair(d, b.ports),
            "tlsgate-intercept": lambda: start_tlsgate_intercept(d, b.tlsgate, b.ports),
            "squid": lambda: start_squid(d, b.ports),
            "mitmproxy": lambda: start_mitmproxy(d, b.venv, b.ports),
        }
        return starters[key]()

    try:
        running["origin"] = start("origin")
        if parts & {"timed", "minting"}:
            for key in ("tlsgate", "stunnel", "haproxy", "nginx", "tlsgate-intercept", "squid", "mitmproxy"):
                running[key] = start(key)
            if "timed" in parts:
                run_limits(b, running)
                for rep in range(PARAMS["reps"]):
                    run_timed(b, running, rep)
            if "minting" in parts:
                run_minting(b, running)
            for key in list(running):
                if key != "origin":
                    for p in running.pop(key):
                        p.stop()
        if "memory" in parts:
            run_memory(b, start)
    finally:
        for procs in running.values():
            for p in procs:
                p.stop()
        remove_big_file(d)  # a GiB of memory: removed even with --keep
        if args.allocs:
            del_alloc_probes()
        with open(f"{d}/results.json", "w") as f:
            json.dump(b.results, f, indent=1)
    text = report(summarize(b.results), started, b)
    with open(f"{d}/report.md", "w") as f:
        f.write(text + "\n")
    print(text)
    log(f"raw results: {d}/results.json; table: {d}/report.md")
    if not args.keep:
        for name in os.listdir(d):
            if name not in ("results.json", "report.md"):
                path = os.path.join(d, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


if __name__ == "__main__":
    main()
