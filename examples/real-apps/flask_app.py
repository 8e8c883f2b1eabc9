"""Minimal Flask app served by Werkzeug's own server (no ProxyFix: as an app owner would start).

Every response is JSON describing what Flask/Werkzeug saw. `/__seen` (only reachable directly,
not through the gateway) lists every request that reached the app: method as received and raw
request target.
"""
import os
import sys
import threading

from flask import Flask, jsonify, redirect, request, url_for

app = Flask(__name__)
PORT = int(os.environ.get("APP_PORT", "5000"))
SEEN = []
LOCK = threading.Lock()


@app.before_request
def record():
    env = request.environ
    if request.path != "/__seen":
        with LOCK:
            SEEN.append({"method": env["REQUEST_METHOD"],
                         "target": env.get("RAW_URI") or env.get("REQUEST_URI")})


@app.route("/__seen")
def seen():
    with LOCK:
        out = list(SEEN)
        if request.args.get("clear"):
            SEEN.clear()
    return jsonify(out)


def describe(handler):
    env = request.environ
    return jsonify(
        app="flask",
        handler=handler,
        method_raw=env["REQUEST_METHOD"],
        method=request.method,
        path=request.path,
        raw_uri=env.get("RAW_URI") or env.get("REQUEST_URI"),
        headers=[[k, v] for k, v in request.headers.items()],
        cookies=request.cookies.to_dict(),
        is_secure=request.is_secure,
        scheme=request.scheme,
        remote_addr=request.remote_addr,
        url=request.url,
    )


@app.route("/items/<item>", methods=["DELETE"])
def delete_item(item):
    return describe("DELETE handler")


@app.route("/items/<path:rest>", methods=["GET", "POST", "PUT", "PATCH"])
def items(rest):
    return describe("items")


@app.route("/public/redirect-self")
def redirect_self():
    # What Flask code typically does: an absolute URL built from the request's Host.
    return redirect(url_for("public", rest="landed", _external=True))


@app.route("/public/redirect-upstream")
def redirect_upstream():
    # An absolute URL at the app's own listening address (what a misconfigured app leaks).
    return redirect(f"http://127.0.0.1:{PORT}/public/landed")


@app.route("/public/redirect-other")
def redirect_other():
    return redirect("https://example.org/elsewhere")


@app.route("/public/", defaults={"rest": ""}, methods=["GET", "POST", "DELETE"])
@app.route("/public/<path:rest>", methods=["GET", "POST", "DELETE"])
def public(rest):
    return describe("public")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    app.run(host="127.0.0.1", port=PORT, threaded=True)
