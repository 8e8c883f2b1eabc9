#!/usr/bin/env python3
"""Load benchmark: the gateway (50 routes, HS256 bearer token on every request, scope checks)
against a bare pass-through proxy on the same stack (examples/passthrough.rs), both in front of
the same fast upstream (examples/upstream.rs), over HTTPS keep-alive, HTTP/1.1 (wrk) and
HTTP/2 (h2load). Rounds are interleaved; the medians and the gateway/pass-through ratios are
printed. Traffic goes to 127.0.0.1 only; every run is bounded in time.

    python3 benches/load.py [--rounds 5] [--duration 5] [--connections 64] [--workers 1]
                            [--login-flood]

--rate-limit adds a phase: h1 throughput of the same route with and without a per-caller
`rate_limit:` (set far above the load, so every request is counted and none refused), rounds
interleaved, medians and their ratio.

--login-flood adds a last phase: proxied h1 latency at a lighter load (16 connections) alone,
then again while 200 connections keep a wrong-password login in flight each (h2load), with
lockout out of the way so every attempt reaches the hash verifier (the worst case: an attacker
spreading over many addresses and usernames). It prints both p99s, their ratio, how the logins
were answered, and the gateway's peak RSS during the flood.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from benchlib import RELEASE, ROOT, free_port, wait_port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def gateway_config(port, admin, upstream_port, hash_, lockout):
    routes = []
    for i in range(48):  # 48 decoys ahead of the measured routes, plus 2 = 50
        routes.append(f"  - {{ id: svc{i}-read, path: /svc{i}/items/**, methods: [GET], upstream: app, scopes: [read:items] }}")
    routes.append("  - { id: items-write, path: /items/**, methods: [POST, PUT, PATCH], upstream: app, scopes: [write:items] }")
    routes.append("  - { id: items-read, path: /items/**, upstream: app, scopes: [read:items] }")
    # The same route under a per-caller limit no load here reaches: what counting costs.
    routes.append("  - { id: limited-read, path: /limited/**, upstream: app, scopes: [read:items], rate_limit: { requests: 1000000000, per: 1s } }")
    return f"""listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
tokens:
  issuer: portcullis
  secret: "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
  ttl: 1h
log: {{ format: json }}
{lockout}
scopes:
  read:items: Read
  write:items: {{ description: Write, implies: [read:items] }}
users:
  bench: {{ password: "{hash_}", scopes: [read:items, write:items] }}
upstreams:
  app: http://127.0.0.1:{upstream_port}
routes:
""" + "\n".join(routes) + "\n"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "non2xx": int(errors.group(1)) if errors else 0}


def parse_h2load(out):
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    def ms(v, unit):
        v = float(v)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    mean = ms(m.group(5), m.group(6))
    ok = re.search(r"status codes: (\d+) 2xx", out)
    return {"rps": rps, "mean": mean, "ok": int(ok.group(1)) if ok else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="serving threads for gateway and pass-through")
    ap.add_argument("--login-flood", action="store_true", help="also measure proxied latency under a login flood")
    ap.add_argument("--rate-limit", action="store_true", help="also compare a rate-limited route with the same route unlimited")
    args = ap.parse_args()
    for tool in ("wrk", "h2load", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install wrk nghttp2-client curl")

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "portcullis", "--example", "passthrough", "--example", "upstream"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    procs = []
    try:
        up_port, pt_port, gw_port, admin_port = free_port(), free_port(), free_port(), free_port()
        procs.append(subprocess.Popen([f"{RELEASE}/examples/upstream", f"127.0.0.1:{up_port}", "1"], stderr=subprocess.DEVNULL))
        wait_port(up_port)
        procs.append(subprocess.Popen([f"{RELEASE}/examples/passthrough", f"127.0.0.1:{pt_port}", f"127.0.0.1:{up_port}", str(args.workers)], stderr=subprocess.DEVNULL))
        hash_ = run([f"{RELEASE}/portcullis", "hash-password"], input="bench-password\n").stdout.strip()
        # The config gets a directory of its own: the gateway watches it for edits, and the
        # log file written next to it would otherwise wake the watcher on every line.
        os.mkdir(os.path.join(tmp, "config"))
        config = os.path.join(tmp, "config", "gateway.yaml")
        with open(config, "w") as f:
            # For the flood phase the lockout must not turn attempts away before hashing.
            lockout = "login: { lockout: { failures: 100000000, window: 1m, duration: 1s } }" if args.login_flood else ""
            f.write(gateway_config(gw_port, admin_port, up_port, hash_, lockout))
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), PORTCULLIS_WORKERS=str(args.workers))
        gw_log = open(os.path.join(tmp, "gateway.log"), "w")
        gw = subprocess.Popen([f"{RELEASE}/portcullis", "run", "-c", config], stderr=gw_log, env=env)
        # Same number of serving threads for both: the gateway's comes from the environment.
        procs.append(gw)
        pt = procs[1]
        wait_port(pt_port)
        wait_port(gw_port)
        login = run(["curl", "-sk", f"https://127.0.0.1:{gw_port}/login", "-d", "username=bench", "-d", "password=bench-password"]).stdout
        token = json.loads(login)["access_token"]
        auth = f"Authorization: Bearer {token}"
        idle = {"gateway": rss_kib(gw.pid), "passthrough": rss_kib(pt.pid)}

        targets = {
            "passthrough": f"https://127.0.0.1:{pt_port}/items/42",
            "gateway": f"https://127.0.0.1:{gw_port}/items/42",
        }
        results = {(name, proto): [] for name in targets for proto in ("h1", "h2")}
        # Warm-up (TLS session caches, pools, page faults).
        for url in targets.values():
            run(["wrk", "-t1", "-c8", "-d1s", "-H", auth, url])
        for r in range(args.rounds):
            order = list(targets.items()) if r % 2 == 0 else list(reversed(targets.items()))
            for name, url in order:
                out = run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-H", auth, url]).stdout
                results[(name, "h1")].append(parse_wrk(out))
                out = run(["h2load", "-D", str(args.duration), "-c", str(max(1, args.connections // 8)), "-m", "8", "-t", "1", "-H", auth.lower(), url]).stdout
                results[(name, "h2")].append(parse_h2load(out))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        loaded = {"gateway": rss_kib(gw.pid), "passthrough": rss_kib(pt.pid)}

        med = lambda rows, key: statistics.median(row[key] for row in rows)
        print(f"\nHTTPS keep-alive load, {args.rounds} interleaved rounds x {args.duration}s, "
              f"{args.connections} connections (h2: {max(1, args.connections // 8)} x 8 streams), "
              f"{args.workers} serving thread(s), 50 routes, HS256 token + scope check on every gateway request\n")
        print(f"{'':<12} {'proto':<5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
        for (name, proto), rows in results.items():
            if proto == "h1":
                print(f"{name:<12} {proto:<5} {med(rows, 'rps'):>10.0f} {med(rows, 'p50'):>8.2f} {med(rows, 'p99'):>8.2f} {'':>8}")
            else:
                print(f"{name:<12} {proto:<5} {med(rows, 'rps'):>10.0f} {'':>8} {'':>8} {med(rows, 'mean'):>8.2f}")
        print("\nper round (req/s):")
        for (name, proto), rows in results.items():
            print(f"  {name:<12} {proto}: " + ", ".join(f"{row['rps']:.0f}" for row in rows))
        g1, p1 = results[("gateway", "h1")], results[("passthrough", "h1")]
        g2, p2 = results[("gateway", "h2")], results[("passthrough", "h2")]
        print("\nratios gateway / pass-through (medians):")
        print(f"  h1 throughput {med(g1, 'rps') / med(p1, 'rps'):.3f}   p50 {med(g1, 'p50') / med(p1, 'p50'):.3f}   p99 {med(g1, 'p99') / med(p1, 'p99'):.3f}")
        print(f"  h2 throughput {med(g2, 'rps') / med(p2, 'rps'):.3f}   mean latency {med(g2, 'mean') / med(p2, 'mean'):.3f}")
        print(f"\nRSS KiB  idle: gateway {idle['gateway']}, pass-through {idle['passthrough']};  "
              f"after load: gateway {loaded['gateway']}, pass-through {loaded['passthrough']}")
        bad = sum(row["non2xx"] for row in g1)
        print(f"gateway non-2xx responses (h1): {bad}")
        if args.rate_limit:
            rate_limit_cost(args, gw_port, auth)
        if args.login_flood:
            login_flood(args, gw, gw_port, auth, tmp)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def rate_limit_cost(args, gw_port, auth):
    urls = {"unlimited": f"https://127.0.0.1:{gw_port}/items/42",
            "rate-limited": f"https://127.0.0.1:{gw_port}/limited/42"}
    rows = {name: [] for name in urls}
    for r in range(args.rounds):
        order = list(urls.items()) if r % 2 == 0 else list(reversed(urls.items()))
        for name, url in order:
            out = run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-H", auth, url]).stdout
            rows[name].append(parse_wrk(out))
    med = lambda name, key: statistics.median(row[key] for row in rows[name])
    print(f"\nrate limit cost, h1, {args.rounds} interleaved rounds x {args.duration}s:")
    for name in urls:
        print(f"  {name:<13} {med(name, 'rps'):>10.0f} req/s  p50 {med(name, 'p50'):.2f} ms  p99 {med(name, 'p99'):.2f} ms  "
              f"rounds {[round(row['rps']) for row in rows[name]]}  non-2xx {sum(row['non2xx'] for row in rows[name])}")
    print(f"  rate-limited / unlimited throughput {med('rate-limited', 'rps') / med('unlimited', 'rps'):.3f}")


def login_flood(args, gw, gw_port, auth, tmp):
    url = f"https://127.0.0.1:{gw_port}/items/42"
    wrk = ["wrk", "-t1", "-c16", f"-d{args.duration}s", "--latency", "-H", auth, url]
    body = os.path.join(tmp, "wrong-login.txt")
    with open(body, "w") as f:
        f.write("grant_type=password&username=bench&password=wrong-password")
    flood_cmd = ["h2load", "--h1", "-c", "200", "-m", "1", "-t", "1", "-D", str(args.duration + 2),
                 "-d", body, "-H", "content-type: application/x-www-form-urlencoded",
                 f"https://127.0.0.1:{gw_port}/login"]
    quiet, flooded, answers, peak_rss = [], [], [], 0
    for _ in range(max(1, args.rounds // 2)):
        quiet.append(parse_wrk(run(wrk).stdout))
        flood = subprocess.Popen(flood_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1)
        loaded = subprocess.Popen(wrk, stdout=subprocess.PIPE, text=True)
        while loaded.poll() is None:
            peak_rss = max(peak_rss, rss_kib(gw.pid))
            time.sleep(0.2)
        flooded.append(parse_wrk(loaded.stdout.read()))
        out = flood.communicate(timeout=args.duration + 30)[0]
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", out)
        answers.append((int(done.group(1)) if done else 0, codes.groups() if codes else ()))
    med = lambda rows, key: statistics.median(row[key] for row in rows)
    print(f"\nlogin flood: proxied h1 at 16 connections, alone vs with 200 concurrent wrong-password "
          f"logins (lockout disabled), {len(quiet)} interleaved round(s) x {args.duration}s")
    print(f"  alone:      {med(quiet, 'rps'):>8.0f} req/s   p50 {med(quiet, 'p50'):.2f} ms   p99 {med(quiet, 'p99'):.2f} ms")
    print(f"  with flood: {med(flooded, 'rps'):>8.0f} req/s   p50 {med(flooded, 'p50'):.2f} ms   p99 {med(flooded, 'p99'):.2f} ms")
    print(f"  p99 ratio flood / alone: {med(flooded, 'p99') / med(quiet, 'p99'):.2f}")
    for done, codes in answers:
        if codes:
            print(f"  logins answered: {done} ({codes[2]} 4xx = checked and refused, {codes[3]} 5xx = 503 busy)")
    print(f"  gateway peak RSS during the flood: {peak_rss} KiB;  non-2xx proxied: {sum(r['non2xx'] for r in flooded)}")


if __name__ == "__main__":
    main()
