"""The forward proxy (HTTPS_PROXY): mitmproxy's proxy core with the gateway's routes."""

from gateway.proxy.forward.listener import ForwardProxy

__all__ = ["ForwardProxy"]
