"""A tiny release for the agent tests: stdlib only, listens on $PORT.

    GET /          -> the release name (SHIPYARD_RELEASE or --name)
    GET /health    -> "ok"
    GET /pid       -> the process id
    GET /slow?ms=N -> the release name after N milliseconds
    GET /headers   -> the request headers as JSON
    POST /echo     -> the request body
    Upgrade: echo  -> 101, then every byte received is echoed back

Options: --crash-after SECONDS (exit 3 after that long), --crash-at-start CODE (exit at once),
--close-after-response MS (close each keep-alive connection that long after a response, without
saying so: a pooled upstream connection that dies under the router), --tcp-echo (raw TCP: send
"<name>\\n", then echo). Exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, ThreadingTCPServer
from urllib.parse import parse_qs, urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default=os.environ.get("SHIPYARD_RELEASE", "unnamed"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    parser.add_argument("--crash-after", type=float, default=None)
    parser.add_argument("--crash-at-start", type=int, default=None)
    parser.add_argument("--close-after-response", type=float, default=None)
    parser.add_argument("--tcp-echo", action="store_true")
    opts = parser.parse_args()
    name = opts.name

    if opts.crash_at_start is not None:
        print(f"{name}: crashing at start with code {opts.crash_at_start}", flush=True)
        sys.exit(opts.crash_at_start)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the load tests make thousands of requests

        def _send(self, body: bytes, status: int = 200, ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def handle_one_request(self) -> None:
            super().handle_one_request()
            if opts.close_after_response is not None and not self.close_connection:
                time.sleep(opts.close_after_response / 1000.0)
                self.close_connection = True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if self.headers.get("Upgrade", "").lower() == "echo":
                self.send_response(101)
                self.send_header("Upgrade", "echo")
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                while True:
                    data = self.rfile.read1(65536)
                    if not data:
                        break
                    self.wfile.write(data)
                    self.wfile.flush()
                self.close_connection = True
                return
            if url.path == "/health":
                self._send(b"ok")
            elif url.path == "/pid":
                self._send(str(os.getpid()).encode())
            elif url.path == "/slow":
                ms = float(parse_qs(url.query).get("ms", ["500"])[0])
                time.sleep(ms / 1000.0)
                self._send(name.encode())
            elif url.path == "/headers":
                headers = json.dumps(dict(self.headers.items())).encode()
                self._send(headers, ctype="application/json")
            else:
                self._send(name.encode())

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(name)))
            self.end_headers()

        def do_POST(self) -> None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if size == 0:
                        break
                    body += chunk
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._send(body)

    class EchoHandler(BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.sendall(f"{name}\n".encode())
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)

    if opts.tcp_echo:
        ThreadingTCPServer.allow_reuse_address = True
        ThreadingTCPServer.daemon_threads = True
        server: ThreadingTCPServer = ThreadingTCPServer(("127.0.0.1", opts.port), EchoHandler)
    else:
        ThreadingHTTPServer.daemon_threads = True
        # Like a production server's (gunicorn, uvicorn: 2048): socketserver's default of 5
        # drops the SYNs of a burst the router forwards, which then wait 1 s, 3 s, ...
        ThreadingHTTPServer.request_queue_size = 1024
        server = ThreadingHTTPServer(("127.0.0.1", opts.port), Handler)

    def on_term(signum: int, frame: object) -> None:
        # serve_forever runs in this (main) thread: shut it down from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    if opts.crash_after is not None:

        def crash() -> None:
            time.sleep(opts.crash_after)
            print(f"{name}: crashing on purpose", flush=True)
            os._exit(3)

        threading.Thread(target=crash, daemon=True).start()
    port = server.server_address[1]
    print(f"{name}: listening on 127.0.0.1:{port} pid {os.getpid()}", flush=True)
    server.serve_forever(poll_interval=0.05)
    print(f"{name}: stopped", flush=True)


if __name__ == "__main__":
    main()
