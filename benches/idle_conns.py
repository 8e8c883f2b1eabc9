#!/usr/bin/env python3
"""Hold N idle HTTPS keep-alive connections open against one peer (a helper of load.py).

Each connection (TLS 1.3, ALPN http/1.1, certificate verified against CAFILE) sends one
authorized `GET /items/42`, reads the whole response, then stays open and idle. At most
BATCH connections are being opened at once. When all are done it prints one JSON line
({"ok": ..., "failed": ..., "errors": {...}, "seconds": ...}) and waits for a line on stdin
(load.py reads the peer's RSS meanwhile); it then prints {"still_open": ...} (connections the
peer had not closed by then) and closes them all before exiting.

    python3 benches/idle_conns.py PORT N TOKEN CAFILE [--batch 500] [--timeout 120]

Only 127.0.0.1; standard library only.
"""
import argparse
import asyncio
import collections
import json
import resource
import ssl
import sys
import time


def raise_nofile(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def read_response(reader):
    """The status of one HTTP/1.1 response, its body read in full (length or chunked)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def open_one(port, token, ctx):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    tls = writer.get_extra_info("ssl_object")
    if tls.version() != "TLSv1.3" or tls.selected_alpn_protocol() != "http/1.1":
        raise ValueError(f"negotiated {tls.version()} / {tls.selected_alpn_protocol()}")
    writer.write(f"GET /items/42 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    status = await read_response(reader)
    # Completes when the peer closes the connection (or, unexpectedly, sends something).
    watch = asyncio.ensure_future(reader.read(1))
    return status, writer, watch


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("token")
    ap.add_argument("cafile")
    ap.add_argument("--batch", type=int, default=500, help="connections being opened at once")
    ap.add_argument("--timeout", type=float, default=120, help="seconds allowed for opening them all")
    args = ap.parse_args()
    raise_nofile(args.n + 256)
    ctx = tls_context(args.cafile)
    gate = asyncio.Semaphore(args.batch)

    async def bounded():
        async with gate:
            return await asyncio.wait_for(open_one(args.port, args.token, ctx), 30)

    started = time.monotonic()
    tasks = [asyncio.ensure_future(bounded()) for _ in range(args.n)]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    held, errors, ok = [], collections.Counter(), 0
    for task in done:
        if task.exception() is not None:
            errors[type(task.exception()).__name__ + ": " + str(task.exception())[:80]] += 1
            continue
        status, writer, watch = task.result()
        held.append((writer, watch))
        ok += status == 200
        if status != 200:
            errors[f"HTTP {status}"] += 1
    errors.update({"not finished in time": len(pending)} if pending else {})
    print(json.dumps({"ok": ok, "failed": args.n - ok, "errors": dict(errors),
                      "seconds": round(time.monotonic() - started, 2)}), flush=True)

    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps({"still_open": sum(not closed(watch) for _, watch in held)}), flush=True)
    for _, watch in held:
        watch.cancel()
    await asyncio.wait([asyncio.ensure_future(close(writer)) for writer, _ in held] or [asyncio.sleep(0)], timeout=20)


def closed(watch):
    """Whether the peer closed this connection (a reset counts; its error is consumed)."""
    if watch.done() and not watch.cancelled():
        watch.exception()
    return watch.done()


async def close(writer):
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass  # the peer went first; closed either way


if __name__ == "__main__":
    asyncio.run(main())
