"""Load benchmark of vaultgate against a bare relay, mitmproxy and the upstream (see run.py)."""
