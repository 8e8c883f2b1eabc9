"""The peers of benches/load.py: how each is configured, started, checked and observed.

Peers, all on 127.0.0.1 in front of the same upstream (examples/upstream.rs), all serving the
same self-signed ECDSA P-256 certificate with TLS 1.2/1.3 and ALPN h2,http/1.1:

  passthrough  examples/passthrough.rs: bare hyper + rustls, no auth (the baseline)
  passthrough-pool  the same, forwarding with the gateway's own upstream client: like for
               like with the gateway, so the difference is the gateway's own per-request work
  nginx        Debian's `nginx`: TLS proxy, no auth (benches/peers/nginx.conf)
  haproxy      Debian's `haproxy` 2.6+: `jwt_verify` HS256 + scope rules (benches/peers/haproxy.cfg)
  gateway      portcullis with the config written by gateway_config() below

nginx and haproxy run in the foreground as the current user; every file they write (pid, logs,
temp bodies) is in the benchmark's temp dir.
"""
import base64
import hashlib
import hmac
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid

from benchlib import RELEASE, ROOT, free_port, wait_port

PEERS = ("passthrough", "passthrough-pool", "nginx", "haproxy", "gateway", "gateway-base")
AUTH_PEERS = ("haproxy", "gateway", "gateway-base")
SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ISSUER = "portcullis"
TEMPLATES = os.path.join(ROOT, "benches", "peers")
# nginx and haproxy live in /usr/sbin, which a non-root PATH may lack.
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- tokens and certificate -------------------------------------------------------------

def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_token(scope, ttl=3600, sub="bench", secret=SECRET, now=None):
    """An HS256 JWT like the gateway's own: iss, sub, iat, exp, jti, space-separated scope.

    A `jti` matters: the gateway derives a revocation key by hashing jti-less tokens, which
    would add work on every request that its own tokens do not cost.
    """
    now = int(time.time()) if now is None else now
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iss": ISSUER, "sub": sub, "iat": now, "exp": now + ttl,
              "jti": str(uuid.uuid4()), "scope": scope}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def make_cert(tmp):
    """A self-signed ECDSA P-256 certificate for localhost/127.0.0.1: (cert, key, pem), the
    last being cert + key in one file as haproxy wants."""
    cert, key, pem = (os.path.join(tmp, name) for name in ("cert.pem", "key.pem", "combined.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    with open(pem, "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    return cert, key, pem


# --- process trees: CPU and memory ------------------------------------------------------

def _stat_fields(pid):
    """/proc/PID/stat fields from 3 (state) on; the command name may hold spaces."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree_pids(root):
    """root and all its descendants (nginx/haproxy master + workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(entry)[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass  # gone meanwhile
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def cpu_us(root):
    """utime + stime (stat fields 14, 15) summed over the tree, in microseconds."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return ticks * 1_000_000 / CLK_TCK


def rss_kib(root, field="VmRSS"):
    """A /proc/PID/status memory field (VmRSS by default) summed over the tree, KiB."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)
        except OSError:
            pass
    return total


def memory_kib(root):
    """(RSS, anonymous RSS) of the tree, KiB. The difference is mostly the program's own code
    pages: clean, file-backed, shared with every other process running the same binary and
    reclaimable, so the anonymous part is what each instance really costs."""
    return rss_kib(root), rss_kib(root, "RssAnon")


def pinned(cmd, cpus):
    """cmd under `taskset -c cpus` (taskset execs, so the PID stays the program's)."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


# --- configuration ----------------------------------------------------------------------

def fill(template, values):
    """benches/peers/<template> with every @NAME@ replaced by values[NAME]."""
    with open(os.path.join(TEMPLATES, template)) as f:
        text = f.read()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    for line in text.splitlines():
        if line.split("#", 1)[0].count("@") >= 2:  # comments may mention @PLACEHOLDERS@
            raise SystemExit(f"{template}: unfilled placeholder in {line.strip()!r}")
    return text


def gateway_config(ctx, port, admin):
    """The gateway's bench config: 50 routes (48 decoys ahead of the measured two)."""
    routes = []
    for i in range(48):
        routes.append(f"  - {{ id: svc{i}-read, path: /svc{i}/items/**, methods: [GET], upstream: app, scopes: [read:items] }}")
    routes.append("  - { id: items-write, path: /items/**, methods: [POST, PUT, PATCH], upstream: app, scopes: [write:items] }")
    routes.append("  - { id: items-read, path: /items/**, upstream: app, scopes: [read:items] }")
    # The same route under a per-caller limit no load here reaches: what counting costs.
    routes.append("  - { id: limited-read, path: /limited/**, upstream: app, scopes: [read:items], rate_limit: { requests: 1000000000, per: 1s } }")
    limits = ""
    if ctx.idle_connections:
        # Room for the idle phase; header_read_timeout also bounds an idle h1 keep-alive
        # connection (hyper starts it while waiting for the next head), so it is raised to
        # the 300 s keep-alive nginx and haproxy get.
        limits = f"limits: {{ max_connections: {ctx.max_connections}, header_read_timeout: 300s }}\n"
    return f"""listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
tls: {{ cert: {ctx.cert}, key: {ctx.key} }}
tokens:
  issuer: {ISSUER}
  secret: "{SECRET}"
  ttl: 1h
log: {{ format: json }}
{ctx.lockout}
{limits}scopes:
  read:items: Read
  write:items: {{ description: Write, implies: [read:items] }}
users:
  bench: {{ password: "{ctx.password_hash}", scopes: [read:items, write:items] }}
upstreams:
  app: http://127.0.0.1:{ctx.upstream_port}
routes:
""" + "\n".join(routes) + "\n"


# --- peers ------------------------------------------------------------------------------

class Peer:
    """A started peer: its name, port and process (the root of its process tree)."""

    def __init__(self, name, port, proc):
        self.name, self.port, self.proc = name, port, proc

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path="/items/42"):
        return f"https://127.0.0.1:{self.port}{path}"


def missing(name, ctx=None):
    """Why a peer cannot run here, or None."""
    if name == "gateway-base" and not (ctx and ctx.base_gateway):
        return "no --base-gateway binary given"
    tool = {"nginx": "nginx", "haproxy": "haproxy"}.get(name)
    if tool and not shutil.which(tool, path=SBIN_PATH):
        return f"{tool} not installed (apt-get install {tool})"
    if name == "haproxy":
        out = subprocess.run([shutil.which("haproxy", path=SBIN_PATH), "-v"], capture_output=True, text=True).stdout
        version = tuple(int(n) for n in out.split("version ")[1].split(".")[:2])
        if version < (2, 6):
            return f"haproxy {version} is older than 2.6 (no jwt_verify worth measuring)"
    return None


def _log(ctx, name):
    return open(os.path.join(ctx.tmp, f"{name}.log"), "w")


def start_upstream(ctx):
    port = free_port()
    proc = subprocess.Popen(pinned([f"{RELEASE}/examples/upstream", f"127.0.0.1:{port}", "1"], ctx.upstream_cpus),
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return Peer("upstream", port, proc)


def bin_dir(ctx):
    """Where the measured binaries come from: target/release, or the run's --bin-dir."""
    return getattr(ctx, "bin_dir", None) or RELEASE


def start_passthrough(ctx, port, name="passthrough", client="hyper-util"):
    cmd = [f"{bin_dir(ctx)}/examples/passthrough", f"127.0.0.1:{port}", f"127.0.0.1:{ctx.upstream_port}",
           str(ctx.workers), ctx.cert, ctx.key]
    env = dict(os.environ, PASSTHROUGH_CLIENT=client)
    return subprocess.Popen(pinned(cmd, ctx.server_cpus), stderr=_log(ctx, name), env=env)


def start_passthrough_pool(ctx, port):
    return start_passthrough(ctx, port, "passthrough-pool", "gateway")


def start_nginx(ctx, port):
    home = os.path.join(ctx.tmp, "nginx")
    os.makedirs(home, exist_ok=True)
    conf = os.path.join(home, "nginx.conf")
    with open(conf, "w") as f:
        f.write(fill("nginx.conf", {"TMP": ctx.tmp, "PORT": port, "UPSTREAM_PORT": ctx.upstream_port,
                                    "CERT": ctx.cert, "KEY": ctx.key, "WORKERS": ctx.workers,
                                    "WORKER_CONNECTIONS": 2 * ctx.max_connections, "NOFILE": ctx.nofile}))
    cmd = [shutil.which("nginx", path=SBIN_PATH), "-p", home, "-c", conf, "-e", os.path.join(home, "error.log")]
    if os.geteuid() == 0:
        # As root nginx would hand its workers to `nobody`; keep them as the current user.
        user = pwd.getpwuid(os.geteuid()).pw_name
        cmd += ["-g", f"user {user};"]
    return subprocess.Popen(pinned(cmd, ctx.server_cpus), stderr=_log(ctx, "nginx"))


def start_haproxy(ctx, port):
    home = os.path.join(ctx.tmp, "haproxy")
    os.makedirs(home, exist_ok=True)
    conf = os.path.join(home, "haproxy.cfg")
    # haproxy wants ~2 descriptors per connection and will not start above the hard limit.
    maxconn = min(ctx.max_connections, (ctx.nofile - 100) // 2)
    if maxconn < ctx.idle_connections:
        print(f"note: haproxy maxconn {maxconn} (open-file limit {ctx.nofile}) is below the "
              f"{ctx.idle_connections} idle connections asked for", file=sys.stderr)
    with open(conf, "w") as f:
        f.write(fill("haproxy.cfg", {"TMP": ctx.tmp, "PORT": port, "UPSTREAM_PORT": ctx.upstream_port,
                                     "PEM": ctx.pem, "WORKERS": ctx.workers, "SECRET": SECRET,
                                     "ISSUER": ISSUER, "MAX_CONNECTIONS": maxconn}))
    # -db: foreground, one process (no master-worker); its threads are the nbthread workers.
    cmd = [shutil.which("haproxy", path=SBIN_PATH), "-db", "-f", conf]
    return subprocess.Popen(pinned(cmd, ctx.server_cpus), stdout=subprocess.DEVNULL, stderr=_log(ctx, "haproxy"))


def start_gateway(ctx, port, name="gateway", binary=None):
    # The config gets a directory of its own: the gateway watches it for edits, and the
    # log file written next to it would otherwise wake the watcher on every line.
    config_dir = os.path.join(ctx.tmp, f"config-{name}")
    os.makedirs(config_dir, exist_ok=True)
    config = os.path.join(config_dir, "gateway.yaml")
    with open(config, "w") as f:
        f.write(gateway_config(ctx, port, free_port()))
    # Same number of serving threads as every other peer: the gateway's comes from the env.
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), PORTCULLIS_WORKERS=str(ctx.workers))
    cmd = [binary or f"{bin_dir(ctx)}/portcullis", "run", "-c", config]
    return subprocess.Popen(pinned(cmd, ctx.server_cpus), stderr=_log(ctx, name), env=env)


def start_gateway_base(ctx, port):
    """The same gateway built from an earlier commit (--base-gateway): before and after in one run."""
    return start_gateway(ctx, port, "gateway-base", ctx.base_gateway)


STARTERS = {"passthrough": start_passthrough, "passthrough-pool": start_passthrough_pool,
            "nginx": start_nginx,
            "haproxy": start_haproxy, "gateway": start_gateway, "gateway-base": start_gateway_base}


def start(name, ctx):
    port = free_port()
    proc = STARTERS[name](ctx, port)
    try:
        wait_port(port, timeout=20)
    except SystemExit:
        raise SystemExit(f"{name} did not start; see its log:\n{tail(ctx, name)}")
    return Peer(name, port, proc)


def tail(ctx, name, lines=15):
    for path in (os.path.join(ctx.tmp, f"{name}.log"), os.path.join(ctx.tmp, name, "error.log")):
        if os.path.exists(path):
            with open(path) as f:
                return "".join(f.readlines()[-lines:])
    return ""


def stop(peers):
    for peer in peers:
        if peer.proc.poll() is None:
            peer.proc.terminate()
    for peer in peers:
        try:
            peer.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            peer.proc.kill()
            peer.proc.wait()


# --- behaviour checks -------------------------------------------------------------------

def _curl(ctx, url, *extra):
    out = subprocess.run(["curl", "-s", "--max-time", "5", "--cacert", ctx.cert, "-o", "/dev/null",
                          "-w", "%{http_code} %{http_version}", *extra, url],
                         capture_output=True, text=True).stdout.split()
    return (int(out[0]), out[1]) if len(out) == 2 else (0, "")


def checks(peer):
    """(description, curl args, expected status, expected HTTP version or None) for a peer.

    The certificate is verified against ours (--cacert), so a peer serving another one fails.
    """
    read = f"Authorization: Bearer {mint_token('read:items')}"
    rows = [("token, h1", ["--http1.1", "-H", read], 200, "1.1"),
            ("token, h2 (ALPN)", ["--http2", "-H", read], 200, "2"),
            ("token, TLS 1.2", ["--http1.1", "--tlsv1.2", "--tls-max", "1.2", "-H", read], 200, "1.1")]
    if peer.name in AUTH_PEERS:
        expired = mint_token("read:items", ttl=-3600, now=int(time.time()) - 60)
        forged = mint_token("read:items", secret="not-the-secret-0123456789abcdefghijkl")
        rows += [("no token", [], 401, None),
                 ("wrong signature", ["-H", f"Authorization: Bearer {forged}"], 401, None),
                 ("expired", ["-H", f"Authorization: Bearer {expired}"], 401, None),
                 ("POST with read-only token", ["-X", "POST", "-d", "", "-H", read], 403, None)]
    return rows


def verify(ctx, peer):
    """Run the checks; returns a list of failures (empty when the peer behaves)."""
    failures = []
    for what, args, status, version in checks(peer):
        got, got_version = _curl(ctx, peer.url(), *args)
        if got != status or (version and got_version != version):
            failures.append(f"{what}: got {got} HTTP/{got_version}, want {status}" + (f" HTTP/{version}" if version else ""))
    return failures
