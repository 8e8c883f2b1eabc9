#!/usr/bin/env python3
"""Fleet benchmark: what `state.redis` costs and how fast a fleet agrees. Starts its own
redis-server (no persistence), the example upstream, two gateways A and B sharing that Redis and
one gateway M in memory mode, all release builds on 127.0.0.1, and measures:

1. revocation propagation: a token is logged out on A (the clock starts when A's 204 arrives)
   and B is asked, back to back on a kept-alive connection, until it answers 401;
2. token-endpoint latency, memory (M) vs Redis (A): password logins (argon2id dominates) and
   refresh-token rotations;
3. proxied throughput with Redis configured (A) vs memory (M): wrk, HTTPS keep-alive, the same
   token, interleaved rounds, medians and their ratio (the request path never waits on Redis).

    python3 benches/fleet.py [--propagation 200] [--logins 20] [--refreshes 300]
                             [--rounds 5] [--duration 5] [--connections 32]

Needs: apt-get install redis-server wrk
"""
import argparse
import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from benchlib import RELEASE, ROOT, free_port, wait_port

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def config(port, admin, upstream_port, hash_, redis_url):
    state = f'state:\n  redis: {{ url: "{redis_url}" }}\n' if redis_url else ""
    return f"""listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
tokens:
  issuer: portcullis
  secret: "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
  ttl: 1h
  refresh: {{ ttl: 1d, reuse_grace: 0s }}
login:
  max_revocations_per_subject: 10000
  lockout: {{ failures: 100000000, window: 1m, duration: 1s }}
log: {{ format: json }}
{state}scopes:
  read:items: Read
users:
  bench: {{ password: "{hash_}", scopes: [read:items] }}
upstreams:
  app: http://127.0.0.1:{upstream_port}
routes:
  - {{ id: items, path: /items/**, upstream: app, scopes: [read:items] }}
"""


class Conn:
    """One kept-alive HTTPS connection."""

    def __init__(self, port):
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=TLS, timeout=10)

    def call(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if body is not None:
            body = urllib.parse.urlencode(body)
            headers["content-type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        reply = self.conn.getresponse()
        return reply.status, reply.read()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def describe(values_ms):
    return (f"p50 {pct(values_ms, 50):.2f} ms  p99 {pct(values_ms, 99):.2f} ms  "
            f"max {max(values_ms):.2f} ms  (n={len(values_ms)})")


def login(conn):
    status, body = conn.call("POST", "/login", {"username": "bench", "password": "bench-password"})
    assert status == 200, body
    return json.loads(body)


def parse_wrk(out):
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"wrk output not understood:\n{out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--propagation", type=int, default=200)
    ap.add_argument("--logins", type=int, default=20)
    ap.add_argument("--refreshes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--phases", default="propagation,latency,throughput",
                    help="comma-separated subset of propagation, latency, throughput")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    for tool in ("redis-server", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install redis-server wrk")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "portcullis", "--example", "upstream"],
                   cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="portcullis-fleet-")
    procs = []
    try:
        redis_port, up_port = free_port(), free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([f"{RELEASE}/examples/upstream", f"127.0.0.1:{up_port}", "1"],
                                      stderr=subprocess.DEVNULL))
        wait_port(redis_port)
        wait_port(up_port)
        hash_ = subprocess.run([f"{RELEASE}/portcullis", "hash-password"], input="bench-password\n",
                               capture_output=True, text=True, check=True).stdout.strip()
        ports = {}
        env = dict(os.environ, RUST_LOG="warn", PORTCULLIS_WORKERS="1")
        for name, redis_url in (("A", f"redis://127.0.0.1:{redis_port}"),
                                ("B", f"redis://127.0.0.1:{redis_port}"), ("M", None)):
            port, admin = free_port(), free_port()
            os.mkdir(os.path.join(tmp, name))
            path = os.path.join(tmp, name, "gateway.yaml")
            with open(path, "w") as f:
                f.write(config(port, admin, up_port, hash_, redis_url))
            procs.append(subprocess.Popen([f"{RELEASE}/portcullis", "run", "-c", path], env=env,
                                          stderr=open(os.path.join(tmp, f"{name}.log"), "w")))
            ports[name] = port
        for port in ports.values():
            wait_port(port)
        time.sleep(0.5)  # the replicas subscribe

        # 1. Propagation A -> B.
        a, b = Conn(ports["A"]), Conn(ports["B"])
        tokens = [login(a)["access_token"] for _ in range(args.propagation if "propagation" in phases else 0)]
        delays, late = [], []
        for token in tokens:
            auth = {"authorization": f"Bearer {token}"}
            status, _ = b.call("GET", "/items/1", headers=auth)
            assert status == 200, status
            status, _ = a.call("POST", "/logout", headers=auth)
            assert status == 204, status
            start = time.perf_counter()
            polls = 0
            while True:
                polls += 1
                status, _ = b.call("GET", "/items/1", headers=auth)
                if status == 401:
                    break
                assert status == 200, status
            delays.append((time.perf_counter() - start) * 1000)
            late.append(polls - 1)
        if delays:
            print(f"revocation A -> B (from A's 204 to B's first 401): {describe(delays)}; "
                  f"B still accepted the token after A's 204 in {sum(1 for n in late if n)} of {len(late)} runs")

        # 2. Token endpoint latency.
        for name in ("M", "A") if "latency" in phases else ():
            conn = Conn(ports[name])
            times = []
            for _ in range(args.logins):
                start = time.perf_counter()
                pair = login(conn)
                times.append((time.perf_counter() - start) * 1000)
            print(f"login   {'memory' if name == 'M' else 'redis '}: {describe(times)}")
            refresh_token = pair["refresh_token"]
            times = []
            for _ in range(args.refreshes):
                start = time.perf_counter()
                status, body = conn.call("POST", "/login", {"grant_type": "refresh_token",
                                                            "refresh_token": refresh_token})
                times.append((time.perf_counter() - start) * 1000)
                if status == 429:  # the per-family limit: start a new family
                    refresh_token = login(conn)["refresh_token"]
                    times.pop()
                    continue
                assert status == 200, body
                refresh_token = json.loads(body)["refresh_token"]
            print(f"refresh {'memory' if name == 'M' else 'redis '}: {describe(times)}")

        # 3. Proxied throughput, Redis configured vs memory.
        if "throughput" not in phases:
            return
        token = login(Conn(ports["M"]))["access_token"]
        header = f"Authorization: Bearer {token}"
        urls = {name: f"https://127.0.0.1:{ports[name]}/items/42" for name in ("M", "A")}
        for url in urls.values():
            subprocess.run(["wrk", "-t1", "-c8", "-d1s", "-H", header, url], capture_output=True)
        rps = {name: [] for name in urls}
        for r in range(args.rounds):
            order = ["M", "A"] if r % 2 == 0 else ["A", "M"]
            for name in order:
                out = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-H", header,
                                      urls[name]], capture_output=True, text=True).stdout
                rps[name].append(parse_wrk(out))
        med = {name: statistics.median(values) for name, values in rps.items()}
        print(f"proxied h1 req/s, {args.rounds} interleaved rounds x {args.duration}s, {args.connections} conns, "
              f"1 serving thread each: memory {med['M']:.0f} {[round(v) for v in rps['M']]}, "
              f"redis {med['A']:.0f} {[round(v) for v in rps['A']]}; redis/memory {med['A'] / med['M']:.3f}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
