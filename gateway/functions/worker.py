"""A function worker process: loads the operator's function modules and runs calls.

The gateway starts it as ``python -I -B -m gateway.functions.worker`` with a clean environment
and talks to it in JSON lines: the setup on the first line of standard input, then one call per
line. While a function runs, its vault requests go out as lines too, and the gateway's response
comes back on standard input. Anything the function prints goes to standard error, because
standard output carries the protocol.

The worker reads its function modules first and then confines itself
(``gateway.functions.sandbox``), so that function code never runs with more than the sandbox
allows. It uses the standard library and simplejson only.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import traceback
import types
from collections.abc import Callable
from typing import IO, Any

import simplejson

from gateway.functions.sandbox import confine, python_paths

_ENTRY_POINT = "transform"


class VaultError(Exception):
    """A vault request of a function failed; the message gives the reason, without any value."""


class VaultDenied(VaultError):
    """The function's role does not allow the request."""


class VaultClient:
    """The narrow vault interface that a function gets as its ``vault`` argument.

    Every request goes to the gateway, which checks it against the policies of the step's role.
    """

    Error = VaultError
    Denied = VaultDenied

    def __init__(self, channel: _Channel, call_id: int) -> None:
        self._channel = channel
        self._call_id = call_id

    def tokenize(self, values: list[str], class_name: str) -> list[str]:
        """Return a token for each value, in the given class."""
        tokens: list[str] = self._request(
            {"op": "tokenize", "values": list(values), "class": class_name}
        )
        return tokens

    def detokenize(self, tokens: list[str]) -> list[str]:
        """Return the value of each token, in the view that the role allows."""
        values: list[str] = self._request({"op": "detokenize", "tokens": list(tokens)})
        return values

    def file(self, token: str) -> dict[str, Any]:
        """Return a tokenized file as ``{"filename", "content_type", "data"}``, data in base64.

        The dictionary fits a multipart part once it has a ``name``.
        """
        result: dict[str, Any] = self._request({"op": "file", "token": token})
        return result

    def _request(self, request: dict[str, Any]) -> Any:
        answer = self._channel.exchange({"id": self._call_id, "vault": request})
        error = answer.get("error")
        if error is not None:
            raise (VaultDenied if error.get("denied") else VaultError)(error.get("message", ""))
        return answer.get("result")


class _Channel:
    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._reader = reader
        self._writer = writer

    def read(self) -> dict[str, Any] | None:
        line = self._reader.readline()
        if not line:
            return None
        message: dict[str, Any] = simplejson.loads(line, use_decimal=True)
        return message

    def write(self, message: dict[str, Any]) -> None:
        self._writer.write(_dumps(message) + b"\n")
        self._writer.flush()

    def exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        self.write(message)
        answer = self.read()
        if answer is None:
            sys.exit(0)
        return answer


def _dumps(message: Any) -> bytes:
    text = simplejson.dumps(
        message, use_decimal=True, allow_nan=False, ensure_ascii=False, separators=(",", ":")
    )
    return text.encode("utf-8", "surrogatepass")


class _Function:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.entry: Callable[..., Any] | None = None
        self.takes_vault = False
        self.load_error: str | None = None

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as file:
                source = file.read()
            module = types.ModuleType(f"vaultgate_function_{self.name}")
            module.__file__ = self.path
            sys.modules[module.__name__] = module
            exec(compile(source, self.path, "exec"), module.__dict__)  # noqa: S102 (operator code, confined)
            entry = getattr(module, _ENTRY_POINT, None)
            if not callable(entry):
                self.load_error = f"module has no function {_ENTRY_POINT}(message, ...)"
                return
            self.entry = entry
            self.takes_vault = "vault" in inspect.signature(entry).parameters
        except Exception as exc:
            self.load_error = f"loading raised {type(exc).__name__}{_location(exc, self.path)}"


def _location(exc: BaseException, path: str) -> str:
    """Return `` at name.py:LINE`` for the innermost frame in the function's own file."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path:
            line = frame.lineno
    if line is None and isinstance(exc, SyntaxError) and exc.filename == path:
        line = exc.lineno
    return f" at {os.path.basename(path)}:{line}" if line is not None else ""


def _run_call(function: _Function, request: dict[str, Any], channel: _Channel) -> dict[str, Any]:
    call_id = request["id"]
    if function.entry is None:
        return {"id": call_id, "error": {"kind": "load", "reason": function.load_error}}
    arguments = dict(request.get("args") or {})
    if function.takes_vault:
        arguments["vault"] = VaultClient(channel, call_id)
    try:
        result = function.entry(request["message"], **arguments)
    except MemoryError:
        return {"id": call_id, "error": {"kind": "memory"}}
    except VaultDenied as exc:
        return {"id": call_id, "error": {"kind": "denied", "reason": str(exc)}}
    except BaseException as exc:  # SystemExit too: a function's exit is a failed call
        where = _location(exc, function.path)
        return {
            "id": call_id,
            "error": {"kind": "raised", "type": type(exc).__name__, "where": where},
        }
    return {"id": call_id, "result": result}


def main() -> None:
    reader = sys.stdin.buffer
    writer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = _Channel(reader, writer)

    setup = channel.read()
    if setup is None:
        return
    functions = {
        name: _Function(name, os.path.join(setup["dir"], file_name))
        for name, file_name in setup["modules"].items()
    }
    # Confinement comes before any operator code runs, import time included: Landlock and the
    # capability drop bind only the thread that applies them and the threads it starts later,
    # so the worker must still be single-threaded here.
    if threading.active_count() != 1:
        raise RuntimeError("a function worker must confine itself before starting threads")
    confinement = confine([setup["dir"], *python_paths()], int(setup["memory_limit"]))
    for function in functions.values():
        function.load()
    channel.write(
        {
            "ready": True,
            "landlock_abi": confinement.landlock_abi,
            "user": confinement.user,
            "load_errors": {
                name: function.load_error
                for name, function in functions.items()
                if function.load_error is not None
            },
        }
    )

    while (request := channel.read()) is not None:
        answer = _run_call(functions[request["name"]], request, channel)
        try:
            channel.write(answer)
        except MemoryError:
            channel.write({"id": request["id"], "error": {"kind": "memory"}})
        except (TypeError, ValueError, RecursionError) as exc:
            channel.write(
                {
                    "id": request["id"],
                    "error": {
                        "kind": "invalid",
                        "reason": f"returned a value that is not JSON ({type(exc).__name__})",
                    },
                }
            )
        if answer.get("error", {}).get("kind") == "memory":
            # The heap may be left fragmented near the limit; the gateway starts a new worker.
            return


if __name__ == "__main__":
    main()
