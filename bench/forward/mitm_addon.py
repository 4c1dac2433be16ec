"""A mitmdump script for the baseline: send api.stripe.com to the local stand-in.

It does what vaultgate's ``upstream`` override does and nothing else: the upstream connection
goes to ``BENCH_UPSTREAM`` (``127.0.0.1:PORT``), while the Host header and the TLS server name
stay api.stripe.com. Connections to the stand-in are reused across requests, as vaultgate's are.
"""

from __future__ import annotations

import os

from mitmproxy import http
from mitmproxy.proxy import server_hooks

_HOST = "api.stripe.com"
_ADDRESS, _, _PORT = os.environ["BENCH_UPSTREAM"].rpartition(":")


class RedirectToStandIn:
    def http_connect(self, flow: http.HTTPFlow) -> None:
        # mitmproxy connects to the CONNECT target first (connection_strategy eager, the default).
        if flow.request.host == _HOST:
            flow.request.host = _ADDRESS
            flow.request.port = int(_PORT)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.pretty_host == _HOST:
            flow.request.host = _ADDRESS
            flow.request.port = int(_PORT)
            flow.request.headers["Host"] = _HOST

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address == (_ADDRESS, int(_PORT)):
            data.server.sni = _HOST


addons = [RedirectToStandIn()]
