"""httpbin, unmodified, wrapped in a recording WSGI middleware (outside httpbin) for gunicorn:

    gunicorn -b 127.0.0.1:PORT -w 1 httpbin_app:app

`/__seen` (only reachable directly, not through the gateway) lists every request that reached
httpbin: method as received and gunicorn's RAW_URI.
"""
import json
import threading

import httpbin

SEEN = []
LOCK = threading.Lock()


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/__seen":
        with LOCK:
            body = json.dumps(SEEN).encode()
            if "clear" in environ.get("QUERY_STRING", ""):
                SEEN.clear()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    with LOCK:
        SEEN.append({"method": environ["REQUEST_METHOD"],
                     "target": environ.get("RAW_URI") or environ.get("REQUEST_URI")})
    return httpbin.app(environ, start_response)
