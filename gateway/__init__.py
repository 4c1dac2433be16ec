"""vaultgate: a self-hosted data-privacy vault gateway."""

__version__ = "0.1.0"
