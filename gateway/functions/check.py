"""Check every function step of the route files against the built-ins, the function modules
and the policy, and compile the built-in steps.

Each problem names the route file and the line of the step or of the bad argument.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence

from gateway.engine.routing import Action, Connection, Route
from gateway.engine.selectors import MultipartSelector
from gateway.engine.steps import FunctionStep
from gateway.errors import ConfigProblem
from gateway.functions.builtins import BUILTIN_NAMES, ArgumentError, compile_builtin
from gateway.functions.config import FunctionsConfig, check_argument_type
from gateway.policy.model import PolicySet


def check_function_steps(
    connections: Sequence[Connection],
    functions: FunctionsConfig,
    policy: PolicySet,
    problems: list[ConfigProblem],
) -> list[Connection]:
    """Report every problem of function steps; return connections with built-ins compiled."""
    for name in sorted(set(functions.modules) & set(BUILTIN_NAMES)):
        module = functions.modules[name]
        problems.append(
            ConfigProblem(
                str(module.path),
                None,
                f"function module {name} has the name of a built-in step",
                "rename the file",
            )
        )

    checked: list[Connection] = []
    for connection in connections:
        routes = tuple(
            _check_route(route, connection, functions, policy, problems)
            for route in connection.routes
        )
        checked.append(dataclasses.replace(connection, routes=routes))
    return checked


def _check_route(
    route: Route,
    connection: Connection,
    functions: FunctionsConfig,
    policy: PolicySet,
    problems: list[ConfigProblem],
) -> Route:
    checker = _StepChecker(connection.source, route.name, functions, policy, problems)
    if connection.auth is None:
        for step in (*route.request_functions, *route.response_functions):
            if step.role is not None or step.client is not None:
                # Anyone who can reach a public connection could make the function use the
                # vault under its role, such as to detokenize into the upstream request.
                checker.problem(
                    step.line,
                    f"function step {step.name} uses the vault under a role, but connection "
                    f"{connection.name!r} has no auth section, so anyone could call it",
                    "add auth: {clients: [backend]}, or remove the role",
                )
    for operation in (*route.request, *route.response):
        if (
            isinstance(operation.selector, MultipartSelector)
            and operation.action is Action.TOKENIZE
        ):
            checker.check_file_class(operation.class_name, operation.line)
    return dataclasses.replace(
        route,
        request_functions=tuple(checker.check(step) for step in route.request_functions),
        response_functions=tuple(checker.check(step) for step in route.response_functions),
    )


@dataclasses.dataclass
class _StepChecker:
    file: str
    route: str
    functions: FunctionsConfig
    policy: PolicySet
    problems: list[ConfigProblem]

    def problem(self, line: int, message: str, hint: str | None = None) -> None:
        self.problems.append(ConfigProblem(self.file, line or None, message, hint))

    def check(self, step: FunctionStep) -> FunctionStep:
        self._check_identity(step)
        if step.name in BUILTIN_NAMES:
            try:
                return dataclasses.replace(step, compiled=compile_builtin(step.name, step.args))
            except ArgumentError as error:
                line = step.arg_lines.get(error.argument or "", step.line)
                self.problem(
                    line, f"route {self.route!r} step {step.name}: {error.message}", error.hint
                )
                return step
        module = self.functions.modules.get(step.name)
        if module is None:
            where = (
                f"no module {step.name}.py in {self.functions.directory}"
                if self.functions.directory is not None
                else "no functions folder is configured"
            )
            self.problem(
                step.line,
                f"route {self.route!r} runs unknown function {step.name!r}: it is no built-in "
                f"step and there is {where}",
                "built-in steps are " + ", ".join(BUILTIN_NAMES),
            )
            return step

        for name, value in step.args.items():
            line = step.arg_lines.get(name, step.line)
            parameter = module.parameters.get(name)
            if parameter is None and not module.accepts_any:
                close = difflib.get_close_matches(name, list(module.parameters), n=1)
                known = ", ".join(sorted(module.parameters)) or "none"
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"the keyword-only parameters of its transform are {known}"
                )
                self.problem(line, f"function {step.name} has no argument {name!r}", hint)
            elif parameter is not None and not check_argument_type(value, parameter.annotation):
                self.problem(
                    line,
                    f"argument {name!r} of function {step.name} must be {parameter.annotation}",
                )
        for name, parameter in module.parameters.items():
            if parameter.required and name not in step.args:
                self.problem(
                    step.line,
                    f"function {step.name} needs the argument {name!r}",
                    "add it under args",
                )
        if (step.role or step.client) and not module.takes_vault:
            self.problem(
                step.line,
                f"function {step.name} gets a role but takes no vault parameter",
                "add vault as a keyword-only parameter of transform, or remove the role",
            )
        return step

    def _check_identity(self, step: FunctionStep) -> None:
        if step.role is not None and step.role not in self.policy.roles:
            self.problem(
                step.line,
                f"function step {step.name} has unknown role {step.role!r}",
                "define it under roles",
            )
        if step.client is not None and step.client not in self.policy.clients:
            self.problem(
                step.line,
                f"function step {step.name} has unknown client {step.client!r}",
                "define it under clients",
            )
        if step.name in BUILTIN_NAMES and (step.role or step.client):
            self.problem(
                step.line, f"built-in step {step.name} makes no vault requests, so it takes no role"
            )

    def check_file_class(self, class_name: str | None, line: int) -> None:
        data_class = self.policy.classes.get(class_name or "")
        if data_class is not None and data_class.format != "uuid":
            self.problem(
                line,
                f"route {self.route!r} tokenizes a multipart field into class {class_name!r} of "
                f"format {data_class.format}, which cannot hold a file",
                "use a class of format uuid",
            )
