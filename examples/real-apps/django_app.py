"""Minimal single-file Django project with default security settings (no
SECURE_PROXY_SSL_HEADER, no USE_X_FORWARDED_HOST), served by runserver:

    APP_PORT=PORT python django_app.py runserver 127.0.0.1:PORT --noreload

Every response is JSON describing what Django saw. `/__seen` (only reachable directly, not
through the gateway) lists every request that reached the app. runserver (wsgiref) gives no
raw request target, so `target` is PATH_INFO (already percent-decoded by the server).
"""
import os
import sys
import threading
from urllib.parse import quote

from django.conf import settings

PORT = int(os.environ.get("APP_PORT", "8001"))
settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only-not-secret",
    ALLOWED_HOSTS=["django.localhost", "127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[__name__ + ".record"],
    INSTALLED_APPS=[],
)

from django.http import HttpResponseRedirect, JsonResponse  # noqa: E402
from django.urls import path, re_path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

SEEN = []
LOCK = threading.Lock()


def record(get_response):
    def middleware(request):
        if request.path != "/__seen":
            with LOCK:
                SEEN.append({"method": request.META["REQUEST_METHOD"],
                             "target": quote(request.META.get("PATH_INFO", ""), safe="/%")
                             + ("?" + request.META["QUERY_STRING"]
                                if request.META.get("QUERY_STRING") else "")})
        return get_response(request)
    return middleware


def seen(request):
    with LOCK:
        out = list(SEEN)
        if request.GET.get("clear"):
            SEEN.clear()
    return JsonResponse(out, safe=False)


def describe(request, handler):
    meta = request.META
    return JsonResponse(dict(
        app="django",
        handler=handler,
        method_raw=meta["REQUEST_METHOD"],
        method=request.method,
        path=request.path,
        raw_uri=meta.get("RAW_URI") or meta.get("REQUEST_URI")
        or "(none; PATH_INFO=%r)" % meta.get("PATH_INFO"),
        headers=[[k, v] for k, v in request.headers.items()],
        cookies=dict(request.COOKIES),
        is_secure=request.is_secure(),
        scheme=request.scheme,
        remote_addr=meta.get("REMOTE_ADDR"),
        url=request.build_absolute_uri(),
    ))


@csrf_exempt
def item(request, item):
    if request.method == "DELETE":
        return describe(request, "DELETE handler")
    return describe(request, "items")


@csrf_exempt
def public(request, rest=""):
    return describe(request, "public")


def redirect_self(request):
    return HttpResponseRedirect(request.build_absolute_uri("/public/landed"))


def redirect_upstream(request):
    return HttpResponseRedirect(f"http://127.0.0.1:{PORT}/public/landed")


def redirect_other(request):
    return HttpResponseRedirect("https://example.org/elsewhere")


urlpatterns = [
    path("__seen", seen),
    path("items/<str:item>", item),
    path("public/redirect-self", redirect_self),
    path("public/redirect-upstream", redirect_upstream),
    path("public/redirect-other", redirect_other),
    re_path(r"^public/(?P<rest>.*)$", public),
]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
