"""Serve the built marketing site (standard library only).

build.py copies this file into site/, next to the pages, and it serves the folder it lives in.
HTML pages get their placeholders filled at request time: ``{{release}}`` with
``SHIPYARD_RELEASE``, ``{{commit}}`` with ``SHIPYARD_COMMIT`` (the commit this release runs
from, not the one its artifact was built from: shipyard reuses an unchanged artifact) and
``{{env}}`` with ``SHIPYARD_ENV``. ``/version`` answers JSON.

Run by hand (from site/, after ``python build.py``):
    python serve.py --port 4003
"""

from __future__ import annotations

import argparse
import html
import json
import os
import signal
import sys
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent


def placeholders() -> dict[str, str]:
    return {
        "{{release}}": os.environ.get("SHIPYARD_RELEASE", "unreleased"),
        "{{commit}}": os.environ.get("SHIPYARD_COMMIT", "unknown"),
        "{{env}}": os.environ.get("SHIPYARD_ENV", "none"),
    }


class Handler(SimpleHTTPRequestHandler):
    server_version = "shop-marketing"
    timeout = 5

    def do_GET(self) -> None:
        self.route(head=False)

    def do_HEAD(self) -> None:
        self.route(head=True)

    def route(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/version":
            values = placeholders()
            payload = {
                "component": "marketing",
                "release": values["{{release}}"],
                "commit": values["{{commit}}"],
                "env": values["{{env}}"],
            }
            self.send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json", head)
            return
        # Never serve code or dotfiles: the release folder holds shipyard's .env (mode 0600).
        hidden = any(part.startswith(".") for part in path.split("/") if part)
        if hidden or path.endswith(".py") or "__pycache__" in path:
            self.send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)
            return
        file = Path(self.translate_path(self.path))
        if file.is_dir():
            file = file / "index.html"
        if file.suffix == ".html":
            if not file.is_file():
                self.send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)
                return
            page = file.read_text(encoding="utf-8")
            for key, value in placeholders().items():
                page = page.replace(key, html.escape(value))
            self.send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8", head)
            return
        if head:
            super().do_HEAD()
        else:
            super().do_GET()

    def send(self, status: HTTPStatus, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "not found")
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve the shop marketing site")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: $PORT or 4003)")
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else int(os.environ.get("PORT") or 4003)
    except ValueError as exc:
        print(f"marketing: refusing to start: bad PORT: {exc}", file=sys.stderr)
        return 1
    if not (ROOT / "index.html").is_file():
        print(
            f"marketing: refusing to start: no index.html in {ROOT} (run build.py, then start "
            "serve.py from the site/ folder it creates)",
            file=sys.stderr,
        )
        return 1
    try:
        server = Server(("127.0.0.1", port), partial(Handler, directory=str(ROOT)))
    except OSError as exc:
        print(f"marketing: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"marketing listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print("marketing stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
