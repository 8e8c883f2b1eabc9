"""Minimal Starlette app served by uvicorn (default options):

    uvicorn --host 127.0.0.1 --port PORT starlette_app:app

Every response is JSON describing what Starlette saw; `/ws/echo` is a WebSocket echo that
first sends the identity headers it received. `/__seen` (only reachable directly, not through
the gateway) lists every request that reached the app.
"""
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

PORT = int(os.environ.get("APP_PORT", "8000"))
SEEN = []


class Recorder:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and scope["path"] != "/__seen":
            target = scope["raw_path"].decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            SEEN.append({"method": scope.get("method", "WEBSOCKET"), "target": target})
        await self.app(scope, receive, send)


async def seen(request):
    out = list(SEEN)
    if request.query_params.get("clear"):
        SEEN.clear()
    return JSONResponse(out)


def describe(request: Request, handler: str):
    scope = request.scope
    return JSONResponse(dict(
        app="starlette",
        handler=handler,
        method_raw=scope["method"],
        method=request.method,
        path=scope["path"],
        raw_uri=scope["raw_path"].decode("latin-1"),
        headers=[[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        cookies=dict(request.cookies),
        is_secure=request.url.scheme == "https",
        scheme=request.url.scheme,
        remote_addr=request.client.host if request.client else None,
        url=str(request.url),
    ))


async def delete_item(request):
    return describe(request, "DELETE handler")


async def items(request):
    return describe(request, "items")


async def public(request):
    return describe(request, "public")


async def redirect_self(request):
    return RedirectResponse(str(request.url_for("public", rest="landed")), status_code=302)


async def redirect_upstream(request):
    return RedirectResponse(f"http://127.0.0.1:{PORT}/public/landed", status_code=302)


async def redirect_other(request):
    return RedirectResponse("https://example.org/elsewhere", status_code=302)


async def ws_echo(ws: WebSocket):
    await ws.accept()
    await ws.send_json({"user": ws.headers.get("x-forwarded-user"),
                        "scopes": ws.headers.get("x-forwarded-scopes")})
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except Exception:
        pass


app = Recorder(Starlette(routes=[
    Route("/__seen", seen),
    Route("/items/{item}", delete_item, methods=["DELETE"]),
    Route("/items/{rest:path}", items, methods=["GET", "POST", "PUT", "PATCH"]),
    Route("/public/redirect-self", redirect_self),
    Route("/public/redirect-upstream", redirect_upstream),
    Route("/public/redirect-other", redirect_other),
    Route("/public/{rest:path}", public, methods=["GET", "POST", "DELETE"], name="public"),
    WebSocketRoute("/ws/echo", ws_echo),
]))
