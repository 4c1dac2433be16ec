"""mitmproxy embedded as a library: its master, options, error bodies and log lines.

The forward listener runs mitmproxy's proxy core in the gateway's own event loop, with only the
addons it needs: no web UI, no flow files, no console output. Two of mitmproxy's outputs would
break the gateway's rules, so they are replaced:

- When its HTTP parser or its body size limit rejects a request, its error page quotes the
  bytes it could not parse, which may contain a card number. The gateway's JSON error body,
  which quotes nothing, replaces it.
- Its log lines go through ``gateway.forward.mitmproxy`` with quoted text, digit runs and email
  addresses redacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable

from mitmproxy import certs, http, options
from mitmproxy.addons import next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1, _http2, _http3

from gateway.config.model import Address, Limits

logger = logging.getLogger("gateway.forward")
_mitmproxy_logger = logging.getLogger("gateway.forward.mitmproxy")

# Quoted text (mitmproxy quotes request bytes with repr), email addresses, and digit runs.
# A quote after a letter is an apostrophe ("proxy's") and starts nothing.
_QUOTED_OR_VALUE = re.compile(
    r"""(?<!\w)b?'(?:[^'\\]|\\.)*'|(?<!\w)b?"(?:[^"\\]|\\.)*"|[^\s/@'"]+@[^\s/'"]+"""
    r"""|\d(?:[\d .-]*\d){3,}"""
)
_ERRORS = {
    400: ("invalid_request", "malformed HTTP request"),
    413: ("body_too_large", "request body is larger than limits.max_body_bytes"),
    502: ("upstream_response_invalid", "the upstream response could not be processed"),
}
# Options that make TlsConfig load mitmproxy's own CA from its configuration directory.
_CERT_STORE_OPTIONS = frozenset(
    {"certs", "confdir", "key_size", "cert_passphrase", "emudhra", "emudhra_old"}
)


def redact(message: str) -> str:
    return _QUOTED_OR_VALUE.sub("[redacted]", message)


def error_body(status: int) -> bytes:
    error_type, text = _ERRORS.get(status, ("invalid_request", "the request was rejected"))
    return json.dumps({"error": {"type": error_type, "message": text}}).encode()


def _error_page(status_code: int, message: str) -> bytes:
    """Replace mitmproxy's HTML error page, which quotes ``message``, with a JSON body."""
    return error_body(status_code)


def _http1_error_response(status_code: int, message: str = "") -> bytes:
    response = http.Response.make(
        status_code,
        error_body(status_code),
        http.Headers(Content_Type="application/json", Connection="close"),
    )
    assembled: bytes = http1.assemble_response(response)  # type: ignore[no-untyped-call]
    return assembled


def install_error_bodies() -> None:
    """Make mitmproxy respond to its own rejections with JSON bodies that quote nothing.

    NOTE: this replaces module functions of mitmproxy's HTTP layers (``make_error_response``
    and ``format_error``, mitmproxy 12.3). Over HTTP/2 and HTTP/3 the body is JSON but mitmproxy
    still labels it text/html. A test sends a malformed request and checks the body.
    """
    _http1.make_error_response = _http1_error_response
    _http2.format_error = _error_page  # type: ignore[attr-defined]
    _http3.format_error = _error_page  # type: ignore[attr-defined]


class _RedactingHandler(logging.Handler):
    """Passes mitmproxy's log records to ``gateway.forward.mitmproxy``, redacted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = redact(record.getMessage())
        except (TypeError, ValueError):
            message = "(a log message that could not be formatted)"
        if record.exc_info and record.exc_info[0] is not None:
            # Only the type: an exception's text may quote input.
            message += f" ({record.exc_info[0].__name__})"
        _mitmproxy_logger.log(record.levelno, "%s", message)


def install_log_bridge() -> None:
    """Route mitmproxy's own loggers through the redacting handler, at WARNING and above."""
    mitmproxy_logger = logging.getLogger("mitmproxy")
    mitmproxy_logger.setLevel(logging.WARNING)
    mitmproxy_logger.propagate = False
    if not any(isinstance(handler, _RedactingHandler) for handler in mitmproxy_logger.handlers):
        mitmproxy_logger.addHandler(_RedactingHandler())


class GatewayTlsConfig(tlsconfig.TlsConfig):
    """mitmproxy's TLS addon, signing with the gateway's CA instead of loading its own."""

    def __init__(self, cert_store: certs.CertStore) -> None:
        self.certstore = cert_store

    def configure(self, updated: set[str]) -> None:
        super().configure(set(updated) - _CERT_STORE_OPTIONS)  # type: ignore[no-untyped-call]


class EmbeddedProxy:
    """A running mitmproxy master that serves one regular (HTTP CONNECT) proxy listener."""

    def __init__(self, master: Master, server: proxyserver.Proxyserver) -> None:
        self._master = master
        self._server = server

    @classmethod
    async def start(
        cls, address: Address, addons: Iterable[object], cert_store: certs.CertStore, limits: Limits
    ) -> EmbeddedProxy:
        """Start listening on ``address``; raise ``OSError`` when mitmproxy cannot listen."""
        install_log_bridge()
        install_error_bodies()

        settings = options.Options()
        master = Master(settings, event_loop=asyncio.get_running_loop())
        # NOTE: mitmproxy's master copies every log record of the process into its deprecated
        # add_log event; that handler on the root logger is removed (mitmproxy 12.3).
        master._legacy_log_events.uninstall()

        server = proxyserver.Proxyserver()  # type: ignore[no-untyped-call]
        tls = GatewayTlsConfig(cert_store)
        master.addons.add(*addons, server, next_layer.NextLayer(), tls)  # type: ignore[no-untyped-call]
        settings.update(  # type: ignore[no-untyped-call]
            mode=[f"regular@{address.port}"],
            listen_host=address.host,
            # Connect upstream only when a tunnel needs it; intercepted flows never do.
            connection_strategy="lazy",
            body_size_limit=str(limits.max_body_bytes),
            stream_large_bodies=None,
            validate_inbound_headers=True,
            upstream_cert=False,
            ssl_insecure=False,
            rawtcp=False,
            websocket=False,
            http2=True,
        )

        if not await server.setup_servers():
            await master.done()
            raise OSError(f"the forward proxy cannot listen on {address} (listen.forward)")
        await master.running()
        return cls(master, server)

    @property
    def address(self) -> Address:
        host, port, *_ = self._server.listen_addrs()[0]
        return Address(str(host), int(port))

    def close_client(self, client_id: str) -> bool:
        """Close one client connection; return False when it is gone already."""
        handler = self._server.connections.get(client_id)
        if handler is None:
            return False
        transport = handler.transports.get(handler.client)
        if transport is None or transport.handler is None:
            return False
        transport.handler.cancel("closed by the gateway")
        return True

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        await self._server.servers.update([])
        for client_id in list(self._server.connections):
            if isinstance(client_id, str):
                self.close_client(client_id)
        for _ in range(100):
            if not self._server.connections:
                break
            await asyncio.sleep(0.01)
        await self._master.done()
