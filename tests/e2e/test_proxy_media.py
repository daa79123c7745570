"""The shipped reverse-proxy configuration (deploy/nginx.conf) run by a real nginx (#21):
nothing, /media/ files included, reaches the dashboard without the proxy's login, and media
leave the proxy with ``Cache-Control: no-store``.

Streamlit and oauth2-proxy are stood in for by two small HTTP servers on loopback: the
"dashboard" serves a media file with long-lived caching headers (as Streamlit's media handler
may) and records what reaches it; the "login" accepts a request whose cookie says so. Skipped
where no nginx is installed (``apt-get install nginx``).
"""
from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
OPENSSL = shutil.which("openssl")
SIGNED_IN = "_oauth2_proxy=signed-in"

pytestmark = pytest.mark.skipif(not (NGINX and OPENSSL), reason="nginx and openssl are needed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub(handler_get) -> tuple[ThreadingHTTPServer, list]:
    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            status, headers, body = handler_get(self)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def dashboard(request):
    cached = {"Cache-Control": "max-age=31536000", "Content-Type": "image/png"}
    return (200, cached, b"\x89PNG slice") if request.path.startswith("/media/") else (200, {}, b"app")


def login(request):
    ok = SIGNED_IN in (request.headers.get("Cookie") or "")
    return (202, {}, b"") if ok else (401, {}, b"")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    app, app_seen = stub(dashboard)
    auth, auth_seen = stub(login)
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp / "key.pem", "-out",
                    tmp / "cert.pem", "-days", "1", "-subj", "/CN=agg2exp.hospital.org"], check=True,
                   capture_output=True)
    https, http = free_port(), free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in (("127.0.0.1:8501", f"127.0.0.1:{app.server_port}"),
                     ("127.0.0.1:4180", f"127.0.0.1:{auth.server_port}"),
                     ("listen 443 ", f"listen 127.0.0.1:{https} "), ("listen 80;", f"listen 127.0.0.1:{http};"),
                     ("/etc/ssl/certs/agg2exp.hospital.org.fullchain.pem", str(tmp / "cert.pem")),
                     ("/etc/ssl/private/agg2exp.hospital.org.key", str(tmp / "key.pem"))):
        assert old in site, old
        site = site.replace(old, new)
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
                                    f"http {{\n access_log off;\n include {tmp}/site.conf;\n}}\n")
    proc = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", https), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError((tmp / "error.log").read_text() if (tmp / "error.log").exists() else "nginx")
            time.sleep(0.1)
    yield https, app_seen, auth_seen
    proc.terminate()
    proc.wait(10)
    app.shutdown()
    auth.shutdown()


def get(port: int, path: str, cookie: str | None = None) -> http.client.HTTPResponse:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"Host": "agg2exp.hospital.org", **({"Cookie": cookie} if cookie else {})}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


@pytest.mark.parametrize("path", ["/media/0123abcd.png", "/media/9f9f.csv?title=cases.csv", "/", "/heat_map",
                                  "/_stcore/stream"])
def test_nothing_reaches_the_dashboard_without_the_proxy_login(proxy, path):
    port, app_seen, _ = proxy
    before = len(app_seen)
    response = get(port, path)
    assert response.status == 302 and response.getheader("Location").endswith("/oauth2/start?rd=" + path)
    assert len(app_seen) == before, f"{path} reached the dashboard"


def test_signed_in_media_are_served_and_never_cached(proxy):
    port, app_seen, auth_seen = proxy
    response = get(port, "/media/0123abcd.png", cookie=SIGNED_IN)
    assert response.status == 200 and response.body == b"\x89PNG slice"
    assert response.getheader("Cache-Control") == "no-store", "Streamlit's max-age is replaced"
    assert response.getheader("Pragma") == "no-cache" and response.getheader("X-Content-Type-Options") == "nosniff"
    assert app_seen[-1] == "/media/0123abcd.png" and auth_seen[-1] == "/oauth2/auth"
    page = get(port, "/heat_map", cookie=SIGNED_IN)
    assert page.status == 200 and page.body == b"app"


def test_the_login_check_is_not_reachable_from_outside(proxy):
    port, _, _ = proxy
    assert get(port, "/oauth2/auth", cookie=SIGNED_IN).status == 404, "internal: auth_request only"
    assert get(port, "/_stcore/health").status == 200, "the health check answers on this machine (loopback)"
