"""Function steps of a route phase, and the order in which a phase runs its steps.

A phase (``request`` or ``response``) lists field operations and function steps in the order
they run. The route keeps its field operations in ``Route.request`` and ``Route.response`` as
before, and each function step records its ``position``: the number of the phase's field
operations that come before it. ``phase_plan`` turns the two back into one ordered list, in
which consecutive field operations form one batch, so each run of them costs one vault round
trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.engine.routing import Operation


@dataclass(frozen=True, slots=True)
class FunctionStep:
    """A ``function: NAME`` step: a built-in step or an operator's function module.

    ``args`` are the step's arguments as plain values from YAML. ``role`` or ``client`` names
    whose policies the function's vault calls go through; without either it has no vault
    access. ``compiled`` is filled in when the configuration is loaded: the built-in step ready
    to run, or None for an operator function.
    """

    name: str
    args: dict[str, Any]
    position: int
    line: int = field(default=0, compare=False)
    arg_lines: dict[str, int] = field(default_factory=dict, compare=False)
    """Line of each argument in the route file, for messages."""
    role: str | None = None
    client: str | None = None
    compiled: Any = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OperationBatch:
    """Consecutive field operations of a phase, sent to the vault as one batch."""

    operations: tuple[Operation, ...]


type PhaseStep = OperationBatch | FunctionStep


def phase_plan(
    operations: Sequence[Operation], functions: Sequence[FunctionStep]
) -> list[PhaseStep]:
    """Return the steps of a phase in the order they run."""
    plan: list[PhaseStep] = []
    start = 0
    for function in sorted(functions, key=lambda step: step.position):
        if function.position > start:
            plan.append(OperationBatch(tuple(operations[start : function.position])))
            start = function.position
        plan.append(function)
    if start < len(operations):
        plan.append(OperationBatch(tuple(operations[start:])))
    return plan


__all__ = ["FunctionStep", "OperationBatch", "PhaseStep", "phase_plan"]
