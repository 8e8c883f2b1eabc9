#!/usr/bin/env python3
"""Reload under load: wrk drives HTTPS keep-alive requests at the gateway while the config
file is rewritten every 0.5 s (alternating two valid versions that both allow the measured
route). Prints wrk's totals (errors must be 0, non-2xx must be 0), the number of reloads
applied and their durations from the gateway's own log. 127.0.0.1 only, bounded in time.

    python3 benches/reload_under_load.py [--duration 10]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from benchlib import RELEASE, ROOT, free_port, wait_port


def config(port, upstream_port, hash_, variant):
    extra = "  - { id: extra, path: /extra/**, upstream: app, public: true }\n" if variant else ""
    return f"""listen: 127.0.0.1:{port}
tokens: {{ issuer: portcullis, secret: "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz" }}
log: {{ format: json }}
scopes: {{ "read:items": Read }}
users: {{ bench: {{ password: "{hash_}", scopes: [read:items] }} }}
upstreams: {{ app: "http://127.0.0.1:{upstream_port}" }}
routes:
{extra}  - {{ id: items-read, path: /items/**, upstream: app, scopes: [read:items] }}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "portcullis", "--example", "upstream"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="portcullis-reload-")
    procs = []
    try:
        up_port, gw_port = free_port(), free_port()
        procs.append(subprocess.Popen([f"{RELEASE}/examples/upstream", f"127.0.0.1:{up_port}", "1"], stderr=subprocess.DEVNULL))
        hash_ = subprocess.run([f"{RELEASE}/portcullis", "hash-password"], input="pw-for-bench\n", capture_output=True, text=True, check=True).stdout.strip()
        os.mkdir(os.path.join(tmp, "config"))
        path = os.path.join(tmp, "config", "gateway.yaml")
        with open(path, "w") as f:
            f.write(config(gw_port, up_port, hash_, False))
        log_path = os.path.join(tmp, "gateway.log")
        gw = subprocess.Popen([f"{RELEASE}/portcullis", "run", "-c", path], stderr=open(log_path, "w"), env=dict(os.environ, RUST_LOG="info"))
        procs.append(gw)
        wait_port(gw_port)
        login = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{gw_port}/login", "-d", "username=bench", "-d", "password=pw-for-bench"], capture_output=True, text=True, check=True).stdout
        token = json.loads(login)["access_token"]
        stop = threading.Event()
        writes = [0]

        def flipper():
            variant = True
            while not stop.wait(0.5):
                tmp_path = path + ".tmp"
                with open(tmp_path, "w") as f:
                    f.write(config(gw_port, up_port, hash_, variant))
                os.rename(tmp_path, path)  # as editors do: a new inode each time
                writes[0] += 1
                variant = not variant

        t = threading.Thread(target=flipper)
        t.start()
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{args.duration}s", "-H", f"Authorization: Bearer {token}", f"https://127.0.0.1:{gw_port}/items/1"], capture_output=True, text=True).stdout
        stop.set()
        t.join()
        time.sleep(1.5)
        gw.send_signal(signal.SIGTERM)
        gw.wait(timeout=40)
        log = open(log_path).read()
        applied = [float(m) for m in re.findall(r'"outcome":"applied".*?"elapsed_ms":([\d.]+)', log)]
        rejected = log.count('"outcome":"rejected"')
        total = re.search(r"(\d+) requests in", out).group(1)
        errors = re.search(r"Socket errors: (.*)", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        print(f"requests: {total}   socket errors: {errors.group(1) if errors else 'none'}   non-2xx: {non2xx.group(1) if non2xx else 0}")
        print(f"config writes: {writes[0]}   reloads applied: {len(applied)}   rejected: {rejected}")
        if applied:
            applied.sort()
            print(f"reload duration ms: median {applied[len(applied) // 2]:.2f}, max {applied[-1]:.2f}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
