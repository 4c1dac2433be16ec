"""The ``functions`` section of the configuration, and what the function modules declare.

The gateway never imports an operator's module. It reads each module's source with ``ast`` to
learn the keyword-only parameters of its ``transform`` function, which are the arguments that
a route step may pass, so ``vaultgate check`` can report a bad argument with file and line.
The code itself runs only in the worker processes.

NOTE: because ``check`` never runs a module, a module that parses but fails on import (such as
an import of a missing package) passes ``vaultgate check`` and stops the gateway at start-up.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.fields import Section
from gateway.errors import ConfigProblem

ENTRY_POINT = "transform"
VAULT_PARAMETER = "vault"
_MODULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SIMPLE_TYPES = ("str", "int", "float", "bool", "list", "dict")


@dataclass(frozen=True, slots=True)
class Parameter:
    required: bool
    annotation: str | None
    """``str``, ``int``, ``float``, ``bool``, ``list`` or ``dict`` when annotated so, else None."""


@dataclass(frozen=True, slots=True)
class FunctionModule:
    """An operator's function module as its source declares it."""

    name: str
    path: Path
    parameters: dict[str, Parameter]
    takes_vault: bool
    accepts_any: bool = False
    """True when ``transform`` takes ``**kwargs``, so any argument name is accepted."""


@dataclass(frozen=True, slots=True)
class FunctionsConfig:
    directory: Path | None = None
    """The folder of function modules; None when the configuration names none."""
    workers: int = 2
    timeout: float = 1.0
    """Seconds one call may take, including its vault requests."""
    memory_limit: int = 256 * 1024 * 1024
    """Bytes of address space per worker (RLIMIT_AS)."""
    modules: dict[str, FunctionModule] = field(default_factory=dict)


def read_functions_config(
    section: Section | None, base_dir: Path, problems: list[ConfigProblem]
) -> FunctionsConfig:
    """Read the section and every module in its folder; record each problem."""
    if section is None:
        default_dir = base_dir / "functions"
        if not default_dir.is_dir():
            return FunctionsConfig()
        return FunctionsConfig(directory=default_dir, modules=_modules(default_dir, problems))
    section.check_keys(("dir", "workers", "timeout", "memory_limit"))
    defaults = FunctionsConfig()
    directory = Path(section.string("dir", "functions") or "functions")
    if not directory.is_absolute():
        directory = base_dir / directory
    if not directory.is_dir():
        section.problem(
            "dir",
            f"functions.dir {directory} is not a folder",
            "create it, or point dir at the folder of function modules",
        )
        modules: dict[str, FunctionModule] = {}
    else:
        modules = _modules(directory, problems)
    return FunctionsConfig(
        directory=directory,
        workers=section.integer("workers", defaults.workers, minimum=1),
        timeout=section.duration("timeout", defaults.timeout) or defaults.timeout,
        memory_limit=section.size("memory_limit", defaults.memory_limit),
        modules=modules,
    )


def _modules(directory: Path, problems: list[ConfigProblem]) -> dict[str, FunctionModule]:
    modules: dict[str, FunctionModule] = {}
    for path in sorted(directory.glob("*.py")):
        name = path.stem
        if name.startswith("_"):
            continue
        if not _MODULE_NAME.match(name):
            problems.append(
                ConfigProblem(
                    str(path), None, f"function module name {name!r} is not a Python identifier"
                )
            )
            continue
        module = _read_module(name, path, problems)
        if module is not None:
            modules[name] = module
    return modules


def _read_module(name: str, path: Path, problems: list[ConfigProblem]) -> FunctionModule | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        problems.append(ConfigProblem(str(path), exc.lineno, f"syntax error: {exc.msg}"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(str(path), None, f"cannot read function module: {exc}"))
        return None

    entry = next(
        (
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name == ENTRY_POINT
        ),
        None,
    )
    if entry is None:
        problems.append(
            ConfigProblem(
                str(path),
                None,
                f"function module {name} has no top-level def {ENTRY_POINT}(message, ...)",
                f"define def {ENTRY_POINT}(message, *, vault, ...): ... returning the message",
            )
        )
        return None

    arguments = entry.args
    if len(arguments.posonlyargs) + len(arguments.args) != 1:
        problems.append(
            ConfigProblem(
                str(path),
                entry.lineno,
                f"{ENTRY_POINT} must take the message as its only positional parameter",
                "declare step arguments as keyword-only parameters after *",
            )
        )
        return None
    parameters: dict[str, Parameter] = {}
    defaults = [None] * (len(arguments.kwonlyargs) - len(arguments.kw_defaults))
    for argument, default in zip(
        arguments.kwonlyargs, [*defaults, *arguments.kw_defaults], strict=True
    ):
        annotation = argument.annotation
        type_name = (
            annotation.id
            if isinstance(annotation, ast.Name) and annotation.id in _SIMPLE_TYPES
            else None
        )
        parameters[argument.arg] = Parameter(default is None, type_name)
    takes_vault = parameters.pop(VAULT_PARAMETER, None) is not None
    return FunctionModule(name, path, parameters, takes_vault, arguments.kwarg is not None)


def check_argument_type(value: object, annotation: str | None) -> bool:
    """Tell whether a YAML value fits a parameter's simple annotation."""
    if annotation is None:
        return True
    if annotation == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    expected = {"str": str, "bool": bool, "list": list, "dict": dict}[annotation]
    return isinstance(value, expected)
