"""Read the ``clients``, ``classes`` and ``roles`` sections into a ``PolicySet``.

Each section is a mapping from names to definitions::

    clients:
      backend: {keys: [{secret: "${BACKEND_KEY}"}], roles: [payments]}
    classes:
      card.pan: {format: pan, mask: first6_last4, reveal_to: [stripe]}
    roles:
      payments:
        grants:
          - {actions: [tokenize, detokenize], classes: [card.pan], view: plain, rate_limit: 600/m}

References between the sections, and from connections and routes, are checked in
``gateway.config.policy_check`` once every file is read.
"""

from __future__ import annotations

import hashlib
import re

from gateway.config.fields import Section, parse_duration
from gateway.config.yamlsource import YamlList, YamlMap
from gateway.policy.model import (
    Client,
    ClientKey,
    DataClass,
    Grant,
    MaskKind,
    PolicyAction,
    RateLimit,
    Role,
    View,
)
from gateway.tokens.formats import format_names

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\s*(?:ms|s|m|h|d))\s*$")
MIN_KEY_LENGTH = 12
DEVELOPMENT_KEY_PREFIX = "dev-"
"""Keys that start with this are development defaults; the gateway warns while one is in use."""


type Places = dict[tuple[str, str], tuple[str, int | None]]
"""The file and line of each definition, ``(kind, name) -> (file, line)``, filled in by the
readers."""


def read_clients(section: Section | None, places: Places) -> dict[str, Client]:
    clients: dict[str, Client] = {}
    for name, definition in _named_entries(section, "client", places):
        definition.check_keys(("keys", "roles"))
        keys = _client_keys(definition, name)
        roles = tuple(definition.string_list("roles", []))
        if not roles:
            definition.problem(
                None,
                f"client {name!r} has no roles, so it may do nothing",
                "add roles: [name, ...]",
            )
        clients[name] = Client(name, keys, roles)
    return clients


def _client_keys(definition: Section, client: str) -> tuple[ClientKey, ...]:
    raw = definition.raw("keys")
    if not isinstance(raw, YamlList) or not raw:
        definition.problem(
            "keys",
            f"client {client!r} needs at least one key",
            '- secret: "${BACKEND_KEY}"  (or sha256: <hex digest of the key>)',
        )
        return ()
    keys: list[ClientKey] = []
    for index, item in enumerate(raw):
        entry = Section.of(
            item,
            definition.file,
            definition.problems,
            f"{definition.where}.keys[{index}]",
            raw.line_of(index),
        )
        if entry is None:
            continue
        entry.check_keys(("secret", "sha256"))
        if entry.has("secret") == entry.has("sha256"):
            entry.problem(
                None,
                f"{entry.where} needs exactly one of secret or sha256",
                "secret: ${ENV_VAR} takes the key from the environment; sha256: a hex digest of it",
            )
            continue
        if entry.has("secret"):
            secret = entry.string("secret") or ""
            if len(secret) < MIN_KEY_LENGTH:
                entry.problem(
                    "secret",
                    f"the key of client {client!r} is shorter than {MIN_KEY_LENGTH} characters",
                    "generate one with: python3 -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'",
                )
                continue
            development = secret.startswith(DEVELOPMENT_KEY_PREFIX)
            keys.append(ClientKey(hashlib.sha256(secret.encode()).digest(), development))
            continue
        digest = (entry.string("sha256") or "").strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            entry.problem("sha256", f"sha256 of a key of client {client!r} must be 64 hex digits")
            continue
        keys.append(ClientKey(bytes.fromhex(digest)))
    return tuple(keys)


def read_classes(section: Section | None, places: Places) -> dict[str, DataClass]:
    classes: dict[str, DataClass] = {}
    for name, definition in _named_entries(section, "class", places):
        definition.check_keys(("format", "deterministic", "ttl", "mask", "reveal_to"))
        token_format = definition.string("format", required=True) or "uuid"
        if token_format not in format_names():
            definition.problem(
                "format",
                f"unknown token format {token_format!r}",
                "use one of " + ", ".join(sorted(format_names())),
            )
        mask_text = definition.string("mask", MaskKind.FULL.value) or MaskKind.FULL.value
        try:
            mask = MaskKind(mask_text)
        except ValueError:
            definition.problem(
                "mask",
                f"unknown mask {mask_text!r}",
                "use one of " + ", ".join(kind.value for kind in MaskKind),
            )
            mask = MaskKind.FULL
        classes[name] = DataClass(
            name=name,
            format=token_format,
            deterministic=definition.boolean("deterministic", False),
            ttl=definition.duration("ttl", None),
            mask=mask,
            reveal_to=frozenset(definition.string_list("reveal_to", [])),
        )
    return classes


def read_roles(section: Section | None, places: Places) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for name, definition in _named_entries(section, "role", places):
        definition.check_keys(("grants",))
        raw = definition.raw("grants")
        if not isinstance(raw, YamlList) or not raw:
            definition.problem(
                "grants",
                f"role {name!r} needs a list of grants",
                "- {actions: [detokenize], classes: [card.pan], view: masked}",
            )
            roles[name] = Role(name, ())
            continue
        grants = []
        for index, item in enumerate(raw):
            entry = Section.of(
                item,
                definition.file,
                definition.problems,
                f"{definition.where}.grants[{index}]",
                raw.line_of(index),
            )
            grant = _grant(entry) if entry is not None else None
            if grant is not None:
                grants.append(grant)
        roles[name] = Role(name, tuple(grants))
    return roles


def _grant(entry: Section) -> Grant | None:
    entry.check_keys(("actions", "classes", "view", "rate_limit"))
    actions: set[PolicyAction] = set()
    for text in entry.string_list("actions", []):
        try:
            action = PolicyAction(text)
            if action is PolicyAction.ERASE:
                raise ValueError(text)
            actions.add(action)
        except ValueError:
            entry.problem(
                "actions", f"unknown action {text!r}", "use tokenize, detokenize or delete"
            )
    if not actions:
        entry.problem("actions", f"{entry.where} grants no action", "actions: [detokenize]")
    classes = frozenset(entry.string_list("classes", []))
    if not classes:
        entry.problem("classes", f"{entry.where} names no class", 'classes: [card.pan], or ["*"]')

    view = View.PLAIN
    view_text = entry.string("view")
    if view_text is not None:
        try:
            view = View.parse(view_text)
        except ValueError:
            entry.problem("view", f"view {view_text!r} is unknown; use plain, masked or redacted")
    rate_limit = None
    rate_text = entry.string("rate_limit")
    if rate_text is not None:
        rate_limit = _rate_limit(entry, rate_text)
    if not actions or not classes:
        return None
    return Grant(frozenset(actions), classes, view, rate_limit)


def _rate_limit(entry: Section, text: str) -> RateLimit | None:
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        entry.problem(
            "rate_limit",
            f"rate_limit {text!r} is not a rate",
            "write a count per period, such as 100/m, 5/s or 1000/h",
        )
        return None
    period_text = match.group(2).strip()
    if period_text[0].isalpha():
        period_text = "1" + period_text
    return RateLimit(int(match.group(1)), parse_duration(period_text))


def _named_entries(section: Section | None, kind: str, places: Places) -> list[tuple[str, Section]]:
    """Return (name, definition) for each entry of a name-to-definition mapping."""
    if section is None:
        return []
    entries: list[tuple[str, Section]] = []
    for name, value in section.mapping.items():
        if not _NAME.match(name):
            section.problem(
                name, f"{kind} name {name!r} is not valid", "use letters, digits, '_', '.' and '-'"
            )
            continue
        if value is None:
            value = YamlMap()
            value.line = section.line(name)
            value.key_lines = {}
        definition = Section.of(
            value, section.file, section.problems, f"{section.where}.{name}", section.line(name)
        )
        if definition is not None:
            entries.append((name, definition))
            places[(kind, name)] = (section.file, section.line(name))
    return entries
