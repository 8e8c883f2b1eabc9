#!/usr/bin/env python3
"""Put Portcullis in front of real Python apps (httpbin, Flask, Starlette, Django) and compare
what each app receives with what the gateway's contract promises.

    python3 examples/real-apps/check.py            # from the repository root

Needs: curl (with HTTP/2), Python 3.11+, and
    pip install flask httpbin gunicorn starlette uvicorn django websockets

Everything is started on 127.0.0.1 on free ports, every wait is bounded, and on exit only the
processes this script started are stopped, by PID. Logs go to a temporary directory that is
printed at the end (kept with --keep-logs).
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
APPS = ["httpbin", "flask", "starlette", "django"]

# The repository's demo users (gateway.yaml; passwords in README.md).
ALEX_HASH = "$argon2id$v=19$m=19456,t=2,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI"
ADMIN_HASH = "$argon2id$v=19$m=19456,t=2,p=1$8qxBCCDrkehT9wouAya6FA$mrbbVJ+EIWiBBs3EVJhvgWHF3uZ6+hgWmR8HYUGkmRM"

STARTED = []  # Popen objects, stopped by PID in reverse order
ROWS = []     # (item, app, check, expected, observed, verdict)
PROBE = [0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv, logdir, env=None):
    log = open(os.path.join(logdir, name + ".log"), "wb")
    proc = subprocess.Popen(argv, cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    STARTED.append((name, proc))
    return proc


def stop_all():
    for name, proc in reversed(STARTED):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for name, proc in reversed(STARTED):
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def wait_http(url, timeout, proc, name):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited early (status {proc.returncode}); see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{name} not ready at {url} within {timeout}s")


def gateway_yaml(gw, admin, ports):
    lines = [
        "# Written by examples/real-apps/check.py: real apps behind the gateway, one host each.",
        f"listen: 127.0.0.1:{gw}",
        f"admin: 127.0.0.1:{admin}",
        "tokens: { issuer: portcullis, algorithm: HS256, ttl: 1h, leeway: 30s }",
        "login: { path: /login, lockout: { failures: 5, window: 15m, duration: 15m } }",
        "scopes:",
        "  read:items: View items",
        "  write:items: { description: Create and edit items, implies: [read:items] }",
        "  delete:items: Remove items",
        '  admin: { description: Full access, implies: ["*"] }',
        "users:",
        f'  alex: {{ password: "{ALEX_HASH}", scopes: [read:items, write:items], '
        f'email: alex@example.com, name: "{ALEX_NAME}", groups: [eng, on-call] }}',
        f'  admin: {{ password: "{ADMIN_HASH}", scopes: [admin] }}',
        "upstreams:",
    ]
    lines += [f"  {a}: http://127.0.0.1:{ports[a]}" for a in APPS]
    lines.append("routes:")
    h = "httpbin.localhost"
    lines += [
        f"  - {{ id: hb-public, host: {h}, path: /anything/public/**, upstream: httpbin, public: true }}",
        f"  - {{ id: hb-delete, host: {h}, path: '/anything/{{id}}', methods: [DELETE], upstream: httpbin, scopes: [delete:items] }}",
        f"  - {{ id: hb-anything, host: {h}, path: /anything/**, upstream: httpbin, scopes: [read:items] }}",
    ]
    for p in ["/get", "/cookies", "/headers", "/redirect-to", "/absolute-redirect/**"]:
        rid = "hb" + p.replace("/", "-").replace("*", "")
        lines.append(f"  - {{ id: {rid.rstrip('-')}, host: {h}, path: {p}, upstream: httpbin, public: true }}")
    for a in APPS[1:]:
        h = f"{a}.localhost"
        lines += [
            f"  - {{ id: {a}-public, host: {h}, path: /public/**, upstream: {a}, public: true }}",
            f"  - {{ id: {a}-delete, host: {h}, path: '/items/{{id}}', methods: [DELETE], upstream: {a}, scopes: [delete:items] }}",
            f"  - {{ id: {a}-write, host: {h}, path: /items/**, methods: [POST, PUT, PATCH], upstream: {a}, scopes: [write:items] }}",
            f"  - {{ id: {a}-read, host: {h}, path: /items/**, upstream: {a}, scopes: [read:items] }}",
        ]
    lines.append("  - { id: starlette-ws, host: starlette.localhost, path: /ws/**, upstream: starlette, scopes: [read:items] }")
    return "\n".join(lines) + "\n"


class Ctx:
    pass


def curl(ctx, app, method, path, proto="h1", token=None, headers=(), direct=False, probe=True):
    """One curl request; returns (status, response headers dict (lowercase, last wins), body,
    probe id, curl error)."""
    PROBE[0] += 1
    pid = f"p{PROBE[0]}"
    if probe:
        path += ("&" if "?" in path else "?") + "probe=" + pid
    hdr_file = os.path.join(ctx.logdir, "last-headers")
    if direct:
        url = f"http://127.0.0.1:{ctx.ports[app]}{path}"
        argv = ["curl", "-sS", "--http1.1"]
    else:
        host = f"{app}.localhost"
        url = f"https://{host}:{ctx.gw}{path}"
        argv = ["curl", "-sS", "-k", "--resolve", f"{host}:{ctx.gw}:127.0.0.1",
                "--http2" if proto == "h2" else "--http1.1"]
    argv += ["--path-as-is", "-m", "15", "-X", method, "-D", hdr_file, "-o", "-",
             "-w", "\n%{http_code} %{http_version}"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    r = subprocess.run(argv, capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    body, _, tail = out.rpartition("\n")
    status = int(tail.split()[0]) if tail.split() and tail.split()[0].isdigit() else 0
    version = tail.split()[1] if len(tail.split()) > 1 else "?"
    rh = {}
    try:
        for line in open(hdr_file, encoding="latin-1"):
            if ":" in line:
                k, v = line.split(":", 1)
                rh[k.strip().lower()] = v.strip()
    except FileNotFoundError:
        pass
    err = r.stderr.decode().strip() if r.returncode else ""
    if version not in ("?", "0"):
        want = "2" if proto == "h2" and not direct else "1.1"
        if version != want:
            err = (err + f" [negotiated HTTP/{version}]").strip()
    return status, rh, body, pid, err


def seen(ctx, app, pid):
    with urllib.request.urlopen(f"http://127.0.0.1:{ctx.ports[app]}/__seen", timeout=5) as r:
        entries = json.load(r)
    return [e for e in entries if e["target"] and "probe=" + pid in e["target"]
            and (e["target"].split("probe=" + pid)[1][:1] in ("", "&"))]


def row(item, app, check, expected, observed, ok):
    ROWS.append((item, app, check, expected, observed, "ok" if ok is True else
                 ("DIFF" if ok is False else ok)))


def jbody(body):
    try:
        return json.loads(body)
    except Exception:
        return None


def login(ctx, user, password, scope=None):
    data = f"username={user}&password={password}" + (f"&scope={scope}" if scope else "")
    r = subprocess.run(["curl", "-sS", "-k", "-m", "15", f"https://127.0.0.1:{ctx.gw}/login",
                        "--data", data], capture_output=True, timeout=30)
    return json.loads(r.stdout)["access_token"]


def app_headers(app, body):
    """(name, value) pairs the app saw."""
    j = jbody(body) or {}
    if app == "httpbin":
        return list((j.get("headers") or {}).items())
    return j.get("headers") or []


def hget(pairs, name):
    return [v for k, v in pairs if k.lower() == name.lower()]


# --------------------------------------------------------------------------------------------

def item1(ctx):
    for app in APPS:
        path = "/anything/1" if app == "httpbin" else "/items/1"
        for proto in ("h1", "h2"):
            for m in ("delete", "Delete", "post", "trace"):
                st, _, body, pid, err = curl(ctx, app, m, path, proto, ctx.admin)
                reached = seen(ctx, app, pid)
                obs = f"{st or 'no status'}" + (f" ({err})" if err else "")
                obs += f", app saw {[e['method'] for e in reached]}" if reached else ", not at app"
                row(1, app, f"{proto} -X {m} {path} (admin token)", "400, not at app", obs,
                    st == 400 and not reached)
            st, rh, body, pid, err = curl(ctx, app, "DELETE", path, proto, ctx.reader)
            reached = seen(ctx, app, pid)
            www = rh.get("www-authenticate", "")
            obs = f"{st}{' ' + err if err else ''}, {'app saw it' if reached else 'not at app'}"
            if "insufficient_scope" in www:
                obs += ", insufficient_scope"
            row(1, app, f"{proto} DELETE {path} (read:items token)",
                "403 insufficient_scope, not at app", obs,
                st == 403 and not reached and "insufficient_scope" in www)
            st, _, body, pid, err = curl(ctx, app, "DELETE", path, proto, ctx.admin)
            j = jbody(body) or {}
            handler = j.get("handler") or ("httpbin /anything" if app == "httpbin" else "?")
            got = j.get("method_raw") or j.get("method")
            row(1, app, f"{proto} DELETE {path} (admin token, control)",
                "200, app runs DELETE", f"{st}{' ' + err if err else ''}, {handler}, method {got}",
                st == 200 and got == "DELETE")
        # Control without the gateway: what the app does with a lowercase method on its own.
        st, _, body, pid, err = curl(ctx, app, "delete", path, direct=True)
        j = jbody(body) or {}
        what = j.get("handler") or ("httpbin /anything" if app == "httpbin" and j
                                     else " ".join(body.split())[:70])
        row(1, app, f"DIRECT to app (no gateway): -X delete {path}", "(info: why the gateway refuses)",
            f"{st}, {what}" + (f", method {j.get('method')}" if j.get("method") else ""), "info")


def item2(ctx):
    for app in APPS:
        for proto in ("h2", "h1"):
            path = "/anything/public/c" if app == "httpbin" else "/public/c"
            st, _, body, pid, err = curl(ctx, app, "GET", path, proto,
                                         headers=["cookie: a=1", "cookie: b=2"])
            ch = hget(app_headers(app, body), "cookie")
            if app == "httpbin":
                st2, _, body2, _, _ = curl(ctx, app, "GET", "/cookies", proto,
                                           headers=["cookie: a=1", "cookie: b=2"])
                cookies = (jbody(body2) or {}).get("cookies")
            else:
                cookies = (jbody(body) or {}).get("cookies")
            obs = f"{st}{' ' + err if err else ''}; Cookie headers {ch}; parsed {cookies}"
            if proto == "h2":
                row(2, app, "h2 two cookie fields a=1, b=2",
                    "one Cookie 'a=1; b=2'; parsed {a:1, b:2}", obs,
                    ch == ["a=1; b=2"] and cookies == {"a": "1", "b": "2"})
            else:
                row(2, app, "h1 two Cookie headers a=1, b=2 (forwarded as sent)",
                    "(info: HTTP/1.1 is not joined)", obs, "info")


def item3(ctx):
    for app in APPS:
        base = "/anything/public/" if app == "httpbin" else "/public/"
        for esc in ("%252e", "%25ab"):
            for proto in ("h1", "h2"):
                st, _, body, pid, err = curl(ctx, app, "GET", base + esc, proto)
                reached = seen(ctx, app, pid)
                raw = reached[0]["target"].split("?")[0] if reached else None
                j = jbody(body) or {}
                if app == "django":
                    exp = f"PATH_INFO {base}{esc.replace('%25', '%')} (runserver decodes once)"
                    ok = raw == base + esc.replace("%25", "%")
                else:
                    exp = f"raw target {base}{esc}"
                    ok = raw == base + esc
                extra = ""
                if app == "starlette":
                    extra = f"; scope path {j.get('path')!r}"
                elif app == "flask":
                    extra = f"; request.path {j.get('path')!r}"
                elif app == "httpbin":
                    extra = f"; url {j.get('url')!r}"
                elif app == "django":
                    extra = f"; request.path {j.get('path')!r}"
                row(3, app, f"{proto} GET {base}{esc}", exp,
                    f"{st}{' ' + err if err else ''}; app raw {raw!r}{extra}", ok)


def item4(ctx):
    for app in APPS:
        origin = f"https://{app}.localhost:{ctx.gw}"
        up = f"http://127.0.0.1:{ctx.ports[app]}"
        if app == "httpbin":
            cases = [
                ("/absolute-redirect/1", "url_for(_external=True)", f"{origin}/get"),
                (f"/redirect-to?url={up}/get", "Location at upstream origin", f"{origin}/get"),
                (f"/redirect-to?url={up.replace('127.0.0.1', 'LOCALHOST')}:/get",
                 "upstream origin, other spelling", None),
                ("/redirect-to?url=https://example.org/x", "other URL", "https://example.org/x"),
            ]
        else:
            cases = [
                ("/public/redirect-self", "framework absolute URL from Host", f"{origin}/public/landed"),
                ("/public/redirect-upstream", "Location at upstream origin", f"{origin}/public/landed"),
                ("/public/redirect-other", "other URL", "https://example.org/elsewhere"),
            ]
        for path, what, want in cases:
            if want is None:
                continue
            for proto in ("h1", "h2"):
                st, rh, body, pid, err = curl(ctx, app, "GET", path, proto, probe=False)
                loc = rh.get("location")
                row(4, app, f"{proto} {path} ({what})", f"Location {want}",
                    f"{st}{' ' + err if err else ''} Location {loc}", loc == want)


ALEX_NAME = "Alex Žák"
ALEX_NAME_HEADER = "UTF-8''Alex%20%C5%BD%C3%A1k"  # RFC 8187, as the gateway encodes it
SPOOF = ["X-Forwarded-User: mallory", "X-Forwarded-Email: mallory@evil.example",
         "X-Forwarded-Name: mallory", "X-Forwarded-Groups: mallory-admins", "x-forwarded-scopes: admin", "X-Forwarded-For: 6.6.6.6",
         "X-Forwarded-Proto: http", "X-Forwarded-Host: evil.example", "Forwarded: for=6.6.6.6",
         "X-Real-IP: 6.6.6.6"]


def item5(ctx):
    for app in APPS:
        for label, token, path, user, scopes in (
            ("protected, alex token", ctx.alex,
             "/anything/x?show_env=1" if app == "httpbin" else "/items/x",
             "alex", "read:items write:items"),
            ("public, no token", None,
             "/anything/public/x?show_env=1" if app == "httpbin" else "/public/x", None, None),
        ):
            for proto in ("h1", "h2"):
                extra = list(SPOOF)
                if proto == "h1":
                    extra.append("X_Forwarded_User: mallory-underscore")
                st, _, body, pid, err = curl(ctx, app, "GET", path, proto, token, extra)
                hs = app_headers(app, body)
                j = jbody(body) or {}
                got = {n: hget(hs, n) for n in ("X-Forwarded-User", "X-Forwarded-Scopes",
                                                 "X-Forwarded-For", "X-Forwarded-Proto",
                                                 "X-Forwarded-Host", "Forwarded", "X-Real-Ip",
                                                 "X-Forwarded-Email", "X-Forwarded-Name",
                                                 "X-Forwarded-Groups")}
                leaked = [f"{k}: {v}" for k, v in hs if "mallory" in str(v) or "6.6.6.6" in str(v)
                          or "evil.example" in str(v)]
                ok = (st == 200 and got["X-Forwarded-User"] == ([user] if user else [])
                      and got["X-Forwarded-Scopes"] == ([scopes] if scopes else [])
                      and got["X-Forwarded-Email"] == (["alex@example.com"] if user else [])
                      and got["X-Forwarded-Name"] == ([ALEX_NAME_HEADER] if user else [])
                      and got["X-Forwarded-Groups"] == (["eng,on-call"] if user else [])
                      and got["X-Forwarded-For"] == ["127.0.0.1"]
                      and got["X-Forwarded-Proto"] == ["https"]
                      and got["X-Forwarded-Host"] == [f"{app}.localhost:{ctx.gw}"]
                      and not got["Forwarded"] and not got["X-Real-Ip"] and not leaked)
                obs = (f"{st}{' ' + err if err else ''}; user {got['X-Forwarded-User']}, "
                       f"scopes {got['X-Forwarded-Scopes']}, email {got['X-Forwarded-Email']}, "
                       f"name {got['X-Forwarded-Name']}, groups {got['X-Forwarded-Groups']}, "
                       f"XFF {got['X-Forwarded-For']}, "
                       f"proto {got['X-Forwarded-Proto']}, XFH {got['X-Forwarded-Host']}"
                       + (f"; LEAKED {leaked}" if leaked else "; no spoofed value"))
                row(5, app, f"{proto} {label} + spoofed headers", "gateway's values only", obs, ok)
                if app != "httpbin" and proto == "h1":
                    row(5, app, f"{label}: how the framework reads it",
                        "(info)", f"is_secure={j.get('is_secure')}, scheme={j.get('scheme')}, "
                        f"remote_addr={j.get('remote_addr')}, url={j.get('url')}", "info")
                if app == "httpbin" and proto == "h1" and label.startswith("protected"):
                    st2, _, b2, _, _ = curl(ctx, app, "GET", "/get", "h1", None, SPOOF)
                    row(5, app, "/get origin + url (what httpbin reports)", "(info)",
                        f"origin={(jbody(b2) or {}).get('origin')}, url={(jbody(b2) or {}).get('url')}",
                        "info")


async def ws_check(ctx):
    import websockets
    sslctx = ssl.create_default_context()
    sslctx.check_hostname = False
    sslctx.verify_mode = ssl.CERT_NONE
    uri = f"wss://starlette.localhost:{ctx.gw}/ws/echo"
    kw = dict(ssl=sslctx, host="127.0.0.1", port=ctx.gw, open_timeout=10, close_timeout=5)
    results = []
    try:
        async with websockets.connect(uri, additional_headers={
                "Authorization": f"Bearer {ctx.alex}", "X-Forwarded-User": "mallory"}, **kw) as ws:
            ident = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send("hello through the gateway")
            echo = await asyncio.wait_for(ws.recv(), 10)
            big = "x" * 200_000
            await ws.send(big)
            echo_big = await asyncio.wait_for(ws.recv(), 10)
        results.append(("with alex token: identity, echo, 200 KB echo",
                        "user alex; echo matches",
                        f"identity {ident}; echo {echo!r}; big echo {'ok' if echo_big == big else 'MISMATCH'}",
                        ident.get("user") == "alex" and echo == "hello through the gateway"
                        and echo_big == big))
    except Exception as e:  # noqa: BLE001
        results.append(("with alex token", "user alex; echo matches", f"error {e!r}", False))
    try:
        async with websockets.connect(uri, **kw):
            results.append(("no token", "401 at handshake", "connected!", False))
    except Exception as e:  # noqa: BLE001
        code = getattr(getattr(e, "response", None), "status_code", None)
        results.append(("no token", "401 at handshake", f"{type(e).__name__} status {code}",
                        code == 401))
    return results


def item6(ctx):
    for check, exp, obs, ok in asyncio.run(asyncio.wait_for(ws_check(ctx), 60)):
        row(6, "starlette", f"WebSocket {check}", exp, obs, ok)


def print_table():
    cols = ["#", "app", "check", "expected", "observed", "verdict"]
    width = [2, 9, 52, 38, 0, 7]
    print()
    print(" | ".join(c.ljust(w) for c, w in zip(cols, width) if w) + " | observed")
    print("-" * 160)
    for r in ROWS:
        item, app, check, exp, obs, verdict = r
        print(f"{str(item):2} | {app:9} | {check:52} | {exp:38} | {verdict:7} | {obs}")
    n = {v: sum(1 for r in ROWS if r[5] == v) for v in ("ok", "DIFF", "info")}
    print(f"\n{n['ok']} ok, {n['DIFF']} DIFF (differs from the expectation), {n['info']} info")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", action="store_true", help="cargo run --release")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    for tool in ("curl", "cargo"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found")

    ctx = Ctx()
    ctx.logdir = tempfile.mkdtemp(prefix="portcullis-real-apps-")
    ctx.ports = {a: free_port() for a in APPS}
    ctx.gw, admin = free_port(), free_port()
    cfg = os.path.join(ctx.logdir, "gateway.yaml")
    with open(cfg, "w") as f:
        f.write(gateway_yaml(ctx.gw, admin, ctx.ports))
    py = sys.executable
    try:
        print("building the gateway (cargo build) ...", flush=True)
        subprocess.run(["cargo", "build", "-q"] + (["--release"] if args.release else []),
                       cwd=REPO, check=True, timeout=1800)
        procs = {
            "httpbin": start("httpbin", [py, "-m", "gunicorn", "-b", f"127.0.0.1:{ctx.ports['httpbin']}",
                                         "-w", "1", "--threads", "4", "httpbin_app:app"], ctx.logdir),
            "flask": start("flask", [py, "flask_app.py"], ctx.logdir,
                           {"APP_PORT": str(ctx.ports["flask"])}),
            "starlette": start("starlette", [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port",
                                             str(ctx.ports["starlette"]), "starlette_app:app"],
                               ctx.logdir, {"APP_PORT": str(ctx.ports["starlette"])}),
            "django": start("django", [py, "django_app.py", "runserver",
                                       f"127.0.0.1:{ctx.ports['django']}", "--noreload"],
                            ctx.logdir, {"APP_PORT": str(ctx.ports["django"])}),
        }
        gw = start("gateway", ["cargo", "run", "-q"] + (["--release"] if args.release else [])
                   + ["--", "run", "-c", cfg], ctx.logdir,
                   {"RUST_LOG": os.environ.get("RUST_LOG", "info")})
        procs["gateway"] = gw
        for a in APPS:
            wait_http(f"http://127.0.0.1:{ctx.ports[a]}/__seen", 60, procs[a], a)
        wait_http(f"http://127.0.0.1:{admin}/readyz", 120, gw, "gateway")
        print(f"apps {ctx.ports}, gateway https://127.0.0.1:{ctx.gw}, logs {ctx.logdir}", flush=True)

        ctx.admin = login(ctx, "admin", "admin-secret")
        ctx.alex = login(ctx, "alex", "secret123")
        ctx.reader = login(ctx, "alex", "secret123", "read:items")
        for step in (item1, item2, item3, item4, item5, item6):
            try:
                step(ctx)
            except Exception as e:  # noqa: BLE001 - report and go on
                row(step.__name__[-1], "-", step.__name__, "runs", f"check crashed: {e!r}", False)
        print_table()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(ROWS, f, indent=1)
    finally:
        stop_all()
        if args.keep_logs:
            print(f"logs kept in {ctx.logdir}")
        else:
            shutil.rmtree(ctx.logdir, ignore_errors=True)
    return 1 if any(r[5] == "DIFF" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
