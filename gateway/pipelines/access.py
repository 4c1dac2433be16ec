"""Pipeline access control: the client a pipeline runs as, its reveal policy and its audit.

A pipeline runs with the configuration's key file, so its policy check is not a wall against
its operator. It caps what a reveal writes (plain, masked or redacted, per class, as the vault
API would for the same client), and it records every tokenized and revealed value in an audit
trail under the client's name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.audit.events import AuditEvent, Outcome
from gateway.config.audit import AuditConfig, process_file
from gateway.errors import InvalidTokenError
from gateway.pipelines.detectors import DETECTOR_CLASSES
from gateway.pipelines.spec import (
    LENGTH_PRESERVING_FORMATS,
    Action,
    ColumnRule,
    InputFormat,
    PipelineSpec,
    ScanRule,
)
from gateway.policy.masks import render
from gateway.policy.model import PolicyAction, PolicySet, View
from gateway.tokens.formats import get_format
from gateway.tokens.vault import Revealed, ValueType


def resolve_classes(spec: PipelineSpec, policy: PolicySet) -> tuple[PipelineSpec, list[str]]:
    """Give every tokenizing column and every scan's detections their data class's format,
    determinism and expiry.

    A column names its class with ``class``, or gets its format's default class, as a route
    operation does, so that a value gets the same token in files as in the gateway's traffic.
    A detection's class is its detector's (``DETECTOR_CLASSES``), and it overrides the scan's
    own ``formats``, ``deterministic`` and ``ttl``. Returns the resolved spec and the problems:
    an undefined class, a class format that a fixed-width field cannot hold, or a column
    setting that contradicts its class. A configuration without classes leaves the spec as it
    is.
    """
    if not policy.classes:
        return spec, []
    problems: list[str] = []
    columns: list[ColumnRule] = []
    for rule in spec.columns:
        if rule.action is not Action.TOKENIZE:
            columns.append(rule)
            continue
        class_name = rule.class_name or get_format(rule.format).default_class
        data_class = policy.classes.get(class_name)
        if data_class is None:
            defined = ", ".join(sorted(policy.classes))
            problems.append(
                f"{spec.source}: {rule.field} tokenizes into class {class_name!r}, which the "
                f"configuration does not define (it defines {defined})"
            )
            columns.append(rule)
            continue
        fixed = {
            "format": data_class.format,
            "deterministic": data_class.deterministic,
            "ttl": data_class.ttl,
        }
        for key, value in fixed.items():
            if key in rule.explicit and getattr(rule, key) != value:
                problems.append(
                    f"{spec.source}: {rule.field} sets {key} {getattr(rule, key)!r}, but class "
                    f"{class_name!r} fixes it to {value!r}; remove {key} from the rule"
                )
        columns.append(
            dataclasses.replace(
                rule,
                class_name=class_name,
                format=data_class.format,
                deterministic=data_class.deterministic,
                ttl=data_class.ttl,
            )
        )
    scans = tuple(_resolve_scan(spec, rule, policy, problems) for rule in spec.scans)
    return dataclasses.replace(spec, columns=tuple(columns), scans=scans), problems


def _resolve_scan(
    spec: PipelineSpec, rule: ScanRule, policy: PolicySet, problems: list[str]
) -> ScanRule:
    """Give each detector of a scan its data class's format, determinism and expiry.

    A detection is stored under its detector's class, so an undefined class would leave
    tokens that no client may reveal. It is a problem, as it is for a column rule.
    """
    formats = dict(rule.formats)
    class_settings: dict[str, tuple[bool, float | None]] = {}
    for detector in rule.detectors:
        class_name = DETECTOR_CLASSES[detector]
        data_class = policy.classes.get(class_name)
        if data_class is None:
            defined = ", ".join(sorted(policy.classes))
            problems.append(
                f"{spec.source}: scan of {rule.field} stores {detector} detections in class "
                f"{class_name!r}, which the configuration does not define (it defines "
                f"{defined}); define the class, or leave {detector} out of the scan's detectors"
            )
            continue
        if spec.format is InputFormat.FIXED_WIDTH and (
            data_class.format not in LENGTH_PRESERVING_FORMATS
        ):
            problems.append(
                f"{spec.source}: scan of {rule.field} stores {detector} detections in class "
                f"{class_name!r}, whose format {data_class.format} does not keep the length "
                "that a fixed-width field needs; give the class pan, pan_last4, numeric or "
                "alphanumeric"
            )
            continue
        formats[detector] = data_class.format
        class_settings[detector] = (data_class.deterministic, data_class.ttl)
    return dataclasses.replace(rule, formats=formats, class_settings=class_settings)


@dataclass(frozen=True, slots=True)
class PipelineAccess:
    """The client a pipeline runs as, its policy and its audit settings; picklable."""

    client: str | None
    """The client named with ``--client``, or None for a run that only tokenizes."""
    policy: PolicySet
    view: View | None
    """The view asked for with ``--view``; None means the client's best grant per class."""
    operation: str
    """The operation that audit records name, such as ``pipeline patients.yaml``."""
    audit: AuditConfig

    def worker_audit_config(self) -> AuditConfig:
        """Return the audit settings of one worker process: its own file, next to the
        configured one, because each writer of a file continues its own chain."""
        if self.audit.file is None:
            return self.audit
        file = process_file(self.audit.file, f"pipeline-{os.getpid()}")
        return dataclasses.replace(self.audit, file=file, redis_stream=None)

    def reveal(
        self,
        tokens: Sequence[str],
        results: Sequence[Revealed | InvalidTokenError],
        fingerprints: Sequence[str],
    ) -> tuple[list[Revealed | InvalidTokenError], list[AuditEvent]]:
        """Apply the policy to revealed values; return what may be written and the records.

        A class the client may not detokenize becomes an error for that cell, so its row is
        rejected as a row with an unknown token is.
        """
        shown: list[Revealed | InvalidTokenError] = []
        events: list[AuditEvent] = []
        client = self.policy.clients.get(self.client) if self.client else None
        for result, fingerprint in zip(results, fingerprints, strict=True):
            if isinstance(result, InvalidTokenError):
                events.append(
                    self._event(
                        "detokenize",
                        Outcome.FAILED,
                        None,
                        fingerprint,
                        reason="unknown, expired or malformed token",
                    )
                )
                shown.append(result)
                continue
            grant = (
                self.policy.best_grant(client, PolicyAction.DETOKENIZE, result.class_name)
                if client is not None
                else None
            )
            if grant is None:
                reason = f"client {self.client!r} may not detokenize class {result.class_name!r}"
                events.append(
                    self._event(
                        "detokenize", Outcome.DENIED, result.class_name, fingerprint, reason=reason
                    )
                )
                shown.append(InvalidTokenError(reason))
                continue
            view = min(self.view, grant.view) if self.view else grant.view
            events.append(
                self._event(
                    "detokenize", Outcome.ALLOWED, result.class_name, fingerprint, view=view
                )
            )
            if view is View.PLAIN:
                shown.append(result)
                continue
            data_class = self.policy.classes.get(result.class_name)
            mask = data_class.mask if data_class else None
            value = render(result.value, view, mask) if mask else "*" * len(result.value)
            shown.append(Revealed(value, ValueType.STRING, result.format, result.class_name))
        return shown, events

    def tokenized(
        self, class_names: Sequence[str | None], fingerprints: Sequence[str | None]
    ) -> list[AuditEvent]:
        """Return the records of tokenized cells; a None fingerprint is a failed cell."""
        return [
            self._event(
                "tokenize",
                Outcome.ALLOWED if fingerprint else Outcome.FAILED,
                class_name,
                fingerprint,
                reason=None if fingerprint else "value does not fit the format",
            )
            for class_name, fingerprint in zip(class_names, fingerprints, strict=True)
        ]

    def _event(
        self,
        action: str,
        outcome: Outcome,
        class_name: str | None,
        fingerprint: str | None,
        *,
        view: View | None = None,
        reason: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=outcome,
            client=self.client,
            connection=None,
            operation=self.operation,
            class_name=class_name,
            token_fingerprint=fingerprint,
            view=view.label if view else None,
            reason=reason,
        )
