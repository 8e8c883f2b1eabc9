#!/usr/bin/env python3
"""Load benchmark: the gateway beside real peers, all in front of the same fast upstream
(examples/upstream.rs), over HTTPS keep-alive, HTTP/1.1 (wrk) and HTTP/2 (h2load), with the
same HS256 token (scope read:items) on every request:

  passthrough  examples/passthrough.rs, bare hyper + rustls, no auth (the baseline)
  passthrough-pool  the same forwarding with the gateway's own upstream client (like for like:
               what it leaves between itself and the gateway is the gateway's own work)
  nginx        TLS proxy, no auth
  haproxy      jwt_verify HS256 (alg pinned, iss, exp) + the same scope rules as the gateway
  gateway      portcullis: 50 routes, HS256 token + scope check on every request

The peers come from Debian's `nginx` and `haproxy` packages; benches/peers/ holds their
configs (templates filled in by benches/peers.py). A peer whose package is missing is skipped
with a note (an error with --require-peers). Before measuring, every peer is checked with curl
(token -> 200 over h1, h2 and TLS 1.2; for the auth peers: no token, a forged or an expired
token -> 401, a POST needing write:items with a read-only token -> 403).

Rounds are interleaved (A B C D, then D C B A, ...). Per peer and protocol it prints req/s
(median, min-max), the ratio to the pass-through's median, p50/p99 (h2: from h2load's
per-request log), the peer's CPU microseconds per request (utime+stime over its whole process
tree from /proc, upstream excluded) and its RSS (tree) idle and after the load, with the
anonymous part apart from the program's code pages, then a Markdown table. Traffic goes to 127.0.0.1 only; every run is bounded in time.

    python3 benches/load.py [--rounds 5] [--duration 5] [--connections 64] [--workers 1]
                            [--peers passthrough,passthrough-pool,nginx,haproxy,gateway]
                            [--require-peers]
                            [--server-cpus LIST] [--upstream-cpus LIST] [--load-cpus LIST]
                            [--h2-connections 8] [--h2-streams 4] [--wrk-threads 1]
                            [--rate-limit] [--login-flood] [--idle-connections N]
                            [--bin-dir target/pgo/release]

On a 2-core machine a fair run pins every server and the upstream to one core and the load
generators to the other: --server-cpus 0 --upstream-cpus 0 --load-cpus 1 (default: unpinned).
Needs: apt-get install --no-install-recommends nginx haproxy wrk nghttp2-client curl

--rate-limit adds a phase: h1 throughput of the same route with and without a per-caller
`rate_limit:` (set far above the load, so every request is counted and none refused), rounds
interleaved, medians and their ratio.

--login-flood adds a phase: proxied h1 latency at a lighter load (16 connections) alone,
then again while 200 connections keep a wrong-password login in flight each (h2load), with
lockout out of the way so every attempt reaches the hash verifier (the worst case: an attacker
spreading over many addresses and usernames). It prints both p99s, their ratio, how the logins
were answered, and the gateway's peak RSS during the flood.

--idle-connections N adds a last phase: for each peer alone, N HTTPS keep-alive connections
(TLS 1.3, ALPN http/1.1; benches/idle_conns.py) each send one authorized GET, read the
response and stay open, idle; it prints the peer's RSS growth per connection in KiB and how
many got 200. The peers are configured to allow that many connections (and, for the gateway,
to keep an idle h1 connection 300 s, like the others).
"""
import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import peers
from benchlib import ROOT
from peers import pinned, rss_kib, memory_kib, cpu_us


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (0: skip the main phase)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per run")
    ap.add_argument("--connections", type=int, default=64, help="h1 (wrk) connections")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk and h2load threads")
    ap.add_argument("--h2-connections", type=int, default=8)
    ap.add_argument("--h2-streams", type=int, default=4, help="concurrent streams per h2 connection")
    ap.add_argument("--workers", type=int, default=1,
                    help="serving threads of every peer (gateway PORTCULLIS_WORKERS, passthrough's "
                         "argument, nginx worker_processes, haproxy nbthread)")
    ap.add_argument("--peers", default="passthrough,passthrough-pool,nginx,haproxy,gateway", help="comma list, from: " + ",".join(peers.PEERS))
    ap.add_argument("--base-gateway", metavar="PATH",
                    help="a portcullis binary built from an earlier commit, measured as peer gateway-base")
    ap.add_argument("--require-peers", action="store_true", help="a missing peer is an error, not a note")
    ap.add_argument("--server-cpus", help="taskset -c list for the peers (default: unpinned)")
    ap.add_argument("--upstream-cpus", help="taskset -c list for the upstream")
    ap.add_argument("--load-cpus", help="taskset -c list for wrk, h2load and the idle-connection client")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already in target/release")
    ap.add_argument("--bin-dir", metavar="DIR",
                    help="take the gateway and the pass-through from DIR (e.g. target/pgo/release, "
                         "built by benches/pgo.py) instead of target/release; the upstream stays the same")
    ap.add_argument("--login-flood", action="store_true", help="also measure proxied latency under a login flood")
    ap.add_argument("--rate-limit", action="store_true", help="also compare a rate-limited route with the same route unlimited")
    ap.add_argument("--idle-connections", type=int, default=0, metavar="N",
                    help="also measure each peer's memory per idle keep-alive connection")
    args = ap.parse_args()
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if args.base_gateway and "gateway-base" not in args.peers:
        args.peers.append("gateway-base")
    unknown = set(args.peers) - set(peers.PEERS)
    if unknown:
        ap.error(f"unknown peer(s) {sorted(unknown)}; choose from {', '.join(peers.PEERS)}")
    if (args.rate_limit or args.login_flood) and "gateway" not in args.peers:
        ap.error("--rate-limit and --login-flood measure the gateway: keep it in --peers")
    return args


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def raise_nofile(wanted):
    """Raise the open-file limit (inherited by every peer and client started from here);
    as root also the hard limit, which haproxy needs at about 2 x maxconn."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < wanted:
        print(f"note: open-file limit is {soft} (the hard limit), {wanted} wanted", file=sys.stderr)
    return soft


# --- load generators --------------------------------------------------------------------

def ms(value, unit):
    value = float(value)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        return ms(m.group(1), m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "non2xx": int(errors.group(1)) if errors else 0,
            "requests": int(re.search(r"(\d+) requests in", out).group(1))}


def percentile(values, p):
    """Nearest-rank percentile of a sorted list."""
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))] if values else float("nan")


def parse_h2load(out, log_file=None):
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    row = {"rps": rps, "mean": ms(m.group(5), m.group(6)), "ok": int(ok.group(1)) if ok else 0,
           "requests": done, "p50": float("nan"), "p99": float("nan")}
    row["non2xx"] = done - row["ok"]
    if log_file and os.path.exists(log_file):
        # One line per request: start time, status, time for the request (microseconds).
        with open(log_file) as f:
            times = sorted(int(line.split("\t")[2]) / 1000 for line in f if line.count("\t") >= 2)
        row["p50"], row["p99"] = percentile(times, 50), percentile(times, 99)
    return row


def wrk_cmd(args, auth, url, connections=None, duration=None, latency=True):
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{connections or args.connections}",
           f"-d{duration or args.duration}s", "-H", auth, url]
    return pinned(cmd + (["--latency"] if latency else []), args.load_cpus)


def h2load_cmd(args, auth, url, log_file, duration=None):
    name, value = auth.split(": ", 1)
    return pinned(["h2load", "-D", str(duration or args.duration), "-c", str(args.h2_connections),
                   "-m", str(args.h2_streams), "-t", str(min(args.wrk_threads, args.h2_connections)),
                   "--log-file", log_file, "-H", f"{name.lower()}: {value}", url], args.load_cpus)


def measured(peer, cmd, parse):
    """Run one load; the row gains the peer's CPU microseconds per completed request."""
    before = cpu_us(peer.pid)
    out = run(cmd).stdout
    spent = cpu_us(peer.pid) - before
    row = parse(out)
    row["cpu_us"] = spent / row["requests"] if row["requests"] else float("nan")
    return row


def load_h1(args, peer, auth):
    return measured(peer, wrk_cmd(args, auth, peer.url()), parse_wrk)


def load_h2(args, peer, auth, tmp):
    log_file = os.path.join(tmp, "h2load.log")
    if os.path.exists(log_file):
        os.remove(log_file)
    return measured(peer, h2load_cmd(args, auth, peer.url(), log_file), lambda out: parse_h2load(out, log_file))


# --- the main phase ---------------------------------------------------------------------

def start_peers(args, ctx, running):
    """Start the chosen peers; each goes into `running` at once, so a later failure stops it."""
    started = {}
    for name in args.peers:
        why = peers.missing(name, ctx)
        if why:
            if args.require_peers:
                raise SystemExit(f"peer {name}: {why}")
            print(f"note: skipping {name}: {why}", file=sys.stderr)
            continue
        started[name] = peers.start(name, ctx)
        running.append(started[name])
    return started


def check_peers(ctx, started):
    for name, peer in started.items():
        failures = peers.verify(ctx, peer)
        if failures:
            raise SystemExit(f"{name} misbehaves:\n  " + "\n  ".join(failures) + f"\n{peers.tail(ctx, name)}")
        print(f"checked {name}: {len(peers.checks(peer))} curl checks as expected", file=sys.stderr)


def main_phase(args, ctx, started, auth):
    rss = {name: [memory_kib(peer.pid)] for name, peer in started.items()}
    for peer in started.values():  # warm-up: TLS session caches, pools, page faults
        run(wrk_cmd(args, auth, peer.url(), connections=8, duration=1, latency=False))
        run(h2load_cmd(args, auth, peer.url(), os.path.join(ctx.tmp, "warm.log"), duration=1))
    results = {(name, proto): [] for name in started for proto in ("h1", "h2")}
    for r in range(args.rounds):
        order = list(started.values()) if r % 2 == 0 else list(reversed(started.values()))
        for peer in order:
            results[(peer.name, "h1")].append(load_h1(args, peer, auth))
            results[(peer.name, "h2")].append(load_h2(args, peer, auth, ctx.tmp))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    for name, peer in started.items():
        rss[name].append(memory_kib(peer.pid))
    return results, rss


def med(rows, key):
    return statistics.median(row[key] for row in rows)


def report(args, results, rss):
    print(f"\nHTTPS keep-alive load, {args.rounds} interleaved rounds x {args.duration}s, "
          f"{args.connections} connections (h2: {args.h2_connections} x {args.h2_streams} streams), "
          f"{args.workers} serving thread(s); HS256 token on every request (checked by haproxy and "
          f"the gateway: 50 routes + scope check)\n")
    print(f"{'':<12} {'proto':<5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'CPU us/req':>10}")
    for (name, proto), rows in results.items():
        mean = f"{med(rows, 'mean'):>8.2f}" if proto == "h2" else f"{'':>8}"
        print(f"{name:<12} {proto:<5} {med(rows, 'rps'):>10.0f} {med(rows, 'p50'):>8.2f} "
              f"{med(rows, 'p99'):>8.2f} {mean} {med(rows, 'cpu_us'):>10.1f}")
    print("\nper round (req/s):")
    for (name, proto), rows in results.items():
        print(f"  {name:<12} {proto}: " + ", ".join(f"{row['rps']:.0f}" for row in rows))
    if ("gateway", "h1") in results and ("passthrough", "h1") in results:
        g1, p1 = results[("gateway", "h1")], results[("passthrough", "h1")]
        g2, p2 = results[("gateway", "h2")], results[("passthrough", "h2")]
        print("\nratios gateway / pass-through (medians):")
        print(f"  h1 throughput {med(g1, 'rps') / med(p1, 'rps'):.3f}   p50 {med(g1, 'p50') / med(p1, 'p50'):.3f}   p99 {med(g1, 'p99') / med(p1, 'p99'):.3f}")
        print(f"  h2 throughput {med(g2, 'rps') / med(p2, 'rps'):.3f}   mean latency {med(g2, 'mean') / med(p2, 'mean'):.3f}")
    for proto in ("h1", "h2"):
        if ("gateway", proto) in results and ("passthrough-pool", proto) in results:
            g, p = results[("gateway", proto)], results[("passthrough-pool", proto)]
            print(f"  {proto} gateway - passthrough-pool (same upstream client): "
                  f"{med(g, 'cpu_us') - med(p, 'cpu_us'):.1f} CPU us per request")
    print("\nRSS KiB (process tree)  idle: " + ", ".join(f"{n} {v[0][0]}" for n, v in rss.items())
          + ";  after load: " + ", ".join(f"{n} {v[1][0]}" for n, v in rss.items()))
    print("anonymous RSS KiB (without code pages)  idle: " + ", ".join(f"{n} {v[0][1]}" for n, v in rss.items())
          + ";  after load: " + ", ".join(f"{n} {v[1][1]}" for n, v in rss.items()))
    print("non-2xx responses: " + ", ".join(
        f"{name} {proto} {sum(row['non2xx'] for row in rows)}" for (name, proto), rows in results.items()))
    markdown_table(results, rss)


def markdown_table(results, rss):
    print("\n| peer | proto | req/s (min–max) | ×passthrough | p50 ms | p99 ms | CPU µs/req "
          "| RSS MiB idle → after | anon MiB idle → after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, proto), rows in results.items():
        base = results.get(("passthrough", proto))
        ratio = f"{med(rows, 'rps') / med(base, 'rps'):.2f}" if base else "–"
        rates = [row["rps"] for row in rows]
        (idle, idle_anon), (after, after_anon) = rss[name]
        print(f"| {name} | {proto} | {med(rows, 'rps'):.0f} ({min(rates):.0f}–{max(rates):.0f}) | {ratio} "
              f"| {med(rows, 'p50'):.2f} | {med(rows, 'p99'):.2f} | {med(rows, 'cpu_us'):.1f} "
              f"| {idle / 1024:.1f} → {after / 1024:.1f} | {idle_anon / 1024:.1f} → {after_anon / 1024:.1f} |")


# --- main -------------------------------------------------------------------------------

def make_context(args, tmp):
    cert, key, pem = peers.make_cert(tmp)
    hash_ = run([f"{ROOT}/target/release/portcullis", "hash-password"], input="bench-password\n").stdout.strip()
    # For the flood phase the lockout must not turn attempts away before hashing.
    lockout = "login: { lockout: { failures: 100000000, window: 1m, duration: 1s } }" if args.login_flood else ""
    max_connections = max(4096, args.idle_connections + 256)
    return SimpleNamespace(tmp=tmp, cert=cert, key=key, pem=pem, workers=args.workers,
                           server_cpus=args.server_cpus, upstream_cpus=args.upstream_cpus,
                           idle_connections=args.idle_connections, max_connections=max_connections,
                           nofile=raise_nofile(2 * max_connections + 1024), password_hash=hash_,
                           lockout=lockout, upstream_port=None, base_gateway=args.base_gateway,
                           bin_dir=args.bin_dir)


def main():
    args = parse_args()
    for tool in ("wrk", "h2load", "curl", "openssl", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install wrk nghttp2-client curl openssl util-linux")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "portcullis", "--example", "passthrough",
                        "--example", "upstream"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    running = []
    try:
        ctx = make_context(args, tmp)
        upstream = peers.start_upstream(ctx)
        running.append(upstream)
        ctx.upstream_port = upstream.port
        started = start_peers(args, ctx, running)
        check_peers(ctx, started)
        auth = f"Authorization: Bearer {peers.mint_token('read:items')}"
        if args.rounds > 0 and started:
            report(args, *main_phase(args, ctx, started, auth))
        if args.rate_limit:
            rate_limit_cost(args, started["gateway"], auth)
        if args.login_flood:
            for name in ("gateway", "gateway-base"):
                if name in started:
                    login_flood(args, started[name], auth, tmp)
        if args.idle_connections:
            idle_phase(args, ctx, started)
    finally:
        peers.stop(list(reversed(running)))
        shutil.rmtree(tmp, ignore_errors=True)


# --- gateway-only phases ----------------------------------------------------------------

def rate_limit_cost(args, gw, auth):
    urls = {"unlimited": gw.url("/items/42"), "rate-limited": gw.url("/limited/42")}
    rows = {name: [] for name in urls}
    for r in range(args.rounds):
        order = list(urls.items()) if r % 2 == 0 else list(reversed(urls.items()))
        for name, url in order:
            rows[name].append(parse_wrk(run(wrk_cmd(args, auth, url)).stdout))
    print(f"\nrate limit cost, h1, {args.rounds} interleaved rounds x {args.duration}s:")
    for name in urls:
        print(f"  {name:<13} {med(rows[name], 'rps'):>10.0f} req/s  p50 {med(rows[name], 'p50'):.2f} ms  "
              f"p99 {med(rows[name], 'p99'):.2f} ms  rounds {[round(row['rps']) for row in rows[name]]}  "
              f"non-2xx {sum(row['non2xx'] for row in rows[name])}")
    print(f"  rate-limited / unlimited throughput {med(rows['rate-limited'], 'rps') / med(rows['unlimited'], 'rps'):.3f}")


def login_flood(args, gw, auth, tmp):
    wrk = wrk_cmd(args, auth, gw.url(), connections=16)
    body = os.path.join(tmp, "wrong-login.txt")
    with open(body, "w") as f:
        f.write("grant_type=password&username=bench&password=wrong-password")
    flood_cmd = pinned(["h2load", "--h1", "-c", "200", "-m", "1", "-t", "1", "-D", str(args.duration + 2),
                        "-d", body, "-H", "content-type: application/x-www-form-urlencoded", gw.url("/login")],
                       args.load_cpus)
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
    print(f"\nlogin flood, {gw.name}: proxied h1 at 16 connections, alone vs with 200 concurrent wrong-password "
          f"logins (lockout disabled), {len(quiet)} interleaved round(s) x {args.duration}s")
    print(f"  alone:      {med(quiet, 'rps'):>8.0f} req/s   p50 {med(quiet, 'p50'):.2f} ms   p99 {med(quiet, 'p99'):.2f} ms")
    print(f"  with flood: {med(flooded, 'rps'):>8.0f} req/s   p50 {med(flooded, 'p50'):.2f} ms   p99 {med(flooded, 'p99'):.2f} ms")
    print(f"  p99 ratio flood / alone: {med(flooded, 'p99') / med(quiet, 'p99'):.2f}")
    for done, codes in answers:
        if codes:
            print(f"  logins answered: {done} ({codes[2]} 4xx = checked and refused, {codes[3]} 5xx = 503 busy)")
    print(f"  gateway peak RSS during the flood: {peak_rss} KiB;  non-2xx proxied: {sum(r['non2xx'] for r in flooded)}")


# --- idle connections -------------------------------------------------------------------

def hold_idle(args, ctx, peer, token):
    """Open args.idle_connections idle connections to one peer; its RSS before/with them."""
    before = rss_kib(peer.pid)
    helper = os.path.join(ROOT, "benches", "idle_conns.py")
    cmd = pinned([sys.executable, helper, str(peer.port), str(args.idle_connections), token, ctx.cert], args.load_cpus)
    client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        opened = json.loads(client.stdout.readline() or "{}")
        time.sleep(0.5)  # let the peer finish the last responses' bookkeeping
        holding = rss_kib(peer.pid)
        client.stdin.write("close\n")
        client.stdin.flush()
        still = json.loads(client.stdout.readline() or "{}")
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    time.sleep(1)  # the peer notices the closes
    return {"before": before, "holding": holding, "closed": rss_kib(peer.pid), **opened, **still}


def idle_phase(args, ctx, started):
    token = peers.mint_token("read:items")
    n = args.idle_connections
    print(f"\nidle keep-alive connections: {n} per peer (TLS 1.3, http/1.1, one authorized GET each, "
          f"then idle), one peer at a time\n")
    print("| peer | got 200 | still open when measured | open s | RSS MiB before → with N → closed | KiB per connection |")
    print("|---|---|---|---|---|---|")
    for peer in started.values():
        row = hold_idle(args, ctx, peer, token)
        per_conn = (row["holding"] - row["before"]) / n
        print(f"| {peer.name} | {row.get('ok', 0)}/{n} | {row.get('still_open', '?')} | {row.get('seconds', '?')} "
              f"| {row['before'] / 1024:.1f} → {row['holding'] / 1024:.1f} → {row['closed'] / 1024:.1f} | {per_conn:.1f} |")
        if row.get("errors"):
            print(f"  {peer.name} errors: {row['errors']}", file=sys.stderr)


if __name__ == "__main__":
    main()
