"""shop admin: an HTML page over the backend's API (standard library only).

It talks to the backend only through ``SHIPYARD_URL_BACKEND``, which shipyard sets to the
backend release this admin release is deployed with (while a deployment is activating, that is
the *new* backend, not the one serving the public port). Without it the process refuses to
start, rather than guess a URL and health-check itself against the wrong backend.

Environment:
    SHIPYARD_URL_BACKEND   e.g. http://127.0.0.1:54321 (required)
    PORT                   port to listen on (``--port`` wins); 4001 when neither is given
    SHIPYARD_RELEASE, SHIPYARD_COMMIT, SHIPYARD_ENV

Endpoints:
    GET /          the product list, with this release and the backend's release and commit
    GET /health    200 when the backend's /health answers 200 through SHIPYARD_URL_BACKEND,
                   503 naming why otherwise
    GET /version   {"component": "admin", "release", "commit", "env", "backend"}

Run by hand:
    SHIPYARD_URL_BACKEND=http://127.0.0.1:4000 python app.py --port 4001
"""

from __future__ import annotations

import argparse
import html
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import urlsplit

BACKEND_TIMEOUT_S = 1.5  # below the health probe timeout (2 s)


@dataclass(frozen=True)
class Config:
    backend_url: str
    release: str
    commit: str
    env: str


def config_from_env(environ: Mapping[str, str]) -> Config:
    backend = environ.get("SHIPYARD_URL_BACKEND", "").rstrip("/")
    if not backend:
        raise ValueError(
            "SHIPYARD_URL_BACKEND not set (shipyard sets it; by hand use e.g. "
            "SHIPYARD_URL_BACKEND=http://127.0.0.1:4000)"
        )
    if urlsplit(backend).scheme not in {"http", "https"}:
        raise ValueError(f"SHIPYARD_URL_BACKEND must be an http:// URL, got {backend!r}")
    return Config(
        backend_url=backend,
        release=environ.get("SHIPYARD_RELEASE", "unreleased"),
        commit=environ.get("SHIPYARD_COMMIT", "unknown"),
        env=environ.get("SHIPYARD_ENV", "none"),
    )


class BackendError(Exception):
    """The backend could not be reached or answered with an error."""


def fetch(config: Config, path: str) -> tuple[int, object]:
    """GET `path` from the backend; (status, JSON body). Raises BackendError when unreachable."""
    url = config.backend_url + path
    try:
        with urllib.request.urlopen(url, timeout=BACKEND_TIMEOUT_S) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            try:
                return error.code, json.load(error)
            except ValueError:
                return error.code, None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(f"backend at {config.backend_url} unreachable: {reason}") from exc


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>shop admin</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 48rem; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; }}
.versions {{ color: #555; font-size: .9rem; }}
.error {{ background: #fee; border: 1px solid #c00; padding: .6rem; }}
</style></head>
<body>
<h1>shop admin</h1>
<p class="versions">
admin release <code id="admin-release">{release}</code> (commit <code>{commit}</code>, env {env})
&middot; backend release <code id="backend-release">{backend_release}</code>
(commit <code>{backend_commit}</code>) at {backend_url}
</p>
{body}
</body>
</html>
"""


def render_page(config: Config) -> tuple[HTTPStatus, str]:
    backend_release = backend_commit = "?"
    try:
        status, version = fetch(config, "/api/version")
        if status == 200 and isinstance(version, dict):
            backend_release = str(version.get("release", "?"))
            backend_commit = str(version.get("commit", "?"))
        status, products = fetch(config, "/api/products")
        if status != 200 or not isinstance(products, list):
            detail = products.get("error") if isinstance(products, dict) else None
            raise BackendError(f"backend /api/products answered {status}: {detail}")
        rows = "\n".join(
            f"<tr><td>{int(p['id'])}</td><td>{html.escape(str(p['name']))}</td>"
            f"<td>{html.escape(str(p.get('description', '')))}</td>"
            f"<td>{int(p['price_cents']) / 100:.2f}</td></tr>"
            for p in products
        )
        body = (
            f"<h2>Products ({len(products)})</h2>\n<table>\n"
            "<tr><th>id</th><th>name</th><th>description</th><th>price</th></tr>\n"
            f"{rows}\n</table>"
        )
        code = HTTPStatus.OK
    except BackendError as exc:
        body = f'<p class="error">{html.escape(str(exc))}</p>'
        code = HTTPStatus.BAD_GATEWAY
    page = PAGE.format(
        release=html.escape(config.release),
        commit=html.escape(config.commit),
        env=html.escape(config.env),
        backend_release=html.escape(backend_release),
        backend_commit=html.escape(backend_commit),
        backend_url=html.escape(config.backend_url),
        body=body,
    )
    return code, page


def health(config: Config) -> tuple[HTTPStatus, dict[str, object]]:
    identity = {"release": config.release, "commit": config.commit}
    try:
        status, answer = fetch(config, "/health")
    except BackendError as exc:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "reason": str(exc), **identity}
    if status != 200:
        why = answer.get("reason") if isinstance(answer, dict) else None
        reason = f"backend /health at {config.backend_url} answered {status}" + (
            f": {why}" if why else ""
        )
        return HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "reason": reason, **identity}
    return HTTPStatus.OK, {"ok": True, "backend": answer, **identity}


def make_handler(config: Config) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "shop-admin"
        timeout = 5

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/":
                code, page = render_page(config)
                self.send(code, page.encode(), "text/html; charset=utf-8")
            elif path == "/health":
                code, payload = health(config)
                self.send(code, json.dumps(payload).encode(), "application/json")
            elif path == "/version":
                payload = {
                    "component": "admin",
                    "release": config.release,
                    "commit": config.commit,
                    "env": config.env,
                    "backend": config.backend_url,
                }
                self.send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json")
            else:
                self.send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        do_HEAD = do_GET

        def send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if urlsplit(self.path).path != "/health":
                super().log_request(code, size)

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="shop admin (HTML over the backend API)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: $PORT or 4001)")
    args = parser.parse_args(argv)
    try:
        config = config_from_env(os.environ)
        port = args.port if args.port is not None else int(os.environ.get("PORT") or 4001)
    except ValueError as exc:
        print(f"admin: refusing to start: {exc}", file=sys.stderr)
        return 1
    try:
        server = Server(("127.0.0.1", port), make_handler(config))
    except OSError as exc:
        print(f"admin: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"admin release {config.release} (commit {config.commit}), backend {config.backend_url}",
        file=sys.stderr,
        flush=True,
    )
    print(f"admin listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print("admin stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
