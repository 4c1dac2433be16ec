"""Clients, data classes and roles: who may do what with which values, and how they see them.

A client proves who it is with an API key and has roles. A role grants actions on data
classes, each grant with the best view its holder may get. A data class (``card.pan``,
``pii.email``) fixes how its values are tokenized, how they are masked, and to which
connections' upstreams its plaintext may be sent. Anything no grant allows is denied.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PolicyAction(enum.Enum):
    TOKENIZE = "tokenize"
    DETOKENIZE = "detokenize"
    DELETE = "delete"
    ERASE = "erase"
    """Deleting by value; a grant of ``delete`` allows it, so roles never name it."""


class View(enum.IntEnum):
    """The form in which a detokenized value is shown, from least to most revealing."""

    REDACTED = 1
    MASKED = 2
    PLAIN = 3

    @classmethod
    def parse(cls, text: str) -> View:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            # The text is not quoted: a caller may have put a value in the wrong field.
            raise ValueError("the view is unknown; use plain, masked or redacted") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client's API key as its SHA-256 digest; the key itself is never kept."""

    sha256: bytes
    development: bool = False
    """True for a key that a development default supplied, which is warned about at start-up."""


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    keys: tuple[ClientKey, ...]
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``count`` detokenizations per ``period`` seconds, bursts up to ``count``."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period


@dataclass(frozen=True, slots=True)
class Grant:
    actions: frozenset[PolicyAction]
    classes: frozenset[str]
    """Class names, or ``*`` for every class."""
    view: View = View.PLAIN
    rate_limit: RateLimit | None = None
    """Limit on detokenizations per client and class under this grant, or None."""

    def covers(self, action: PolicyAction, class_name: str) -> bool:
        return action in self.actions and ("*" in self.classes or class_name in self.classes)


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    grants: tuple[Grant, ...]


class MaskKind(enum.Enum):
    """The rule by which the masked view of a class shows a value."""

    LAST4 = "last4"
    """Every letter and digit but the last four becomes ``*``; separators stay."""
    FIRST6_LAST4 = "first6_last4"
    """A card number's first six and last four digits stay, as PCI DSS allows to display."""
    EMAIL = "email"
    """The first character of the local part and the whole domain stay: ``j***@example.com``."""
    FIRST_LETTER = "first_letter"
    """The first letter of each word stays: ``J** D**``."""
    FULL = "full"
    """Every character becomes ``*``."""


@dataclass(frozen=True, slots=True)
class DataClass:
    """A class of sensitive values and the rules every value of it follows."""

    name: str
    format: str
    deterministic: bool = False
    ttl: float | None = None
    mask: MaskKind = MaskKind.FULL
    reveal_to: frozenset[str] = frozenset()
    """Connections whose upstreams may receive the plaintext of this class."""


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every client, class and role of a configuration, validated against each other."""

    clients: dict[str, Client] = field(default_factory=dict)
    classes: dict[str, DataClass] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)

    def grants_of(self, client: Client) -> list[Grant]:
        return [grant for role in client.roles for grant in self.roles[role].grants]

    def best_grant(self, client: Client, action: PolicyAction, class_name: str) -> Grant | None:
        """Return the grant that allows ``action`` on the class with the best view, if any."""
        covering = [grant for grant in self.grants_of(client) if grant.covers(action, class_name)]
        if not covering:
            return None
        return max(covering, key=lambda grant: grant.view)
