#!/usr/bin/env python3
"""A stand-in backend for trying vaultgate: prints each request it receives and answers 200.

Usage: python3 scripts/echo-upstream.py [PORT]   (default 3000, loopback only)
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        print(f"{self.command} {self.path}\n{body.decode('utf-8', 'replace')}\n", flush=True)
        answer = json.dumps({"received": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].isdigit():
        print(__doc__)
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    print(f"echo upstream listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), EchoHandler).serve_forever()
