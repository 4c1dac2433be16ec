"""Sample a running server with py-spy and list its functions by cumulative and self time.

py-spy's ``raw`` format writes one line per distinct stack: the frames from the outermost to
the innermost joined by ``;``, a space and the number of samples. Each frame reads
``function (file:line)``. The summary drops the line number, so that every sample inside a
function counts for that function once, however many of its lines the stack passes through.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from bench.servers import venv_executable

SAMPLES_PER_SECOND = 100
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


def start_recording(pid: int, duration_s: float, output: Path) -> subprocess.Popen[bytes]:
    """Start py-spy sampling process ``pid`` for ``duration_s`` seconds into ``output``.

    py-spy pauses the process for each sample. Its ``--nonblocking`` mode would not, but with
    py-spy 0.4.3 on Python 3.13 it returned many stacks cut off below the event loop.
    """
    arguments = [
        venv_executable("py-spy"),
        "record",
        "--pid", str(pid),
        "--duration", str(max(1, round(duration_s))),
        "--rate", str(SAMPLES_PER_SECOND),
        "--format", "raw",
        "--output", str(output),
    ]  # fmt: skip
    return subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _short_frame(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        if "/gateway/" in path:
            path = "gateway/" + path.split("/gateway/", 1)[1]
    return f"{match['function']} ({path})"


def summarize(raw_profile: Path, duration_s: float, *, top: int = 40) -> str:
    """Return text tables of the ``top`` functions by cumulative and by self time.

    Times are in cores: samples divided by ``duration_s`` times the sampling rate, so a
    function that one thread runs all the time scores 1.00, and threads add up. py-spy leaves
    out the samples of threads that it finds idle, but it counts a thread that waits in some
    system calls (such as fsync) as active, so the sum can exceed the process's CPU time.
    Raises ``ValueError`` when the file contains no samples.
    """
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw_profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short_frame(frame) for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for function in set(frames):
            cumulative[function] += count
    if total == 0:
        raise ValueError(f"py-spy profile {raw_profile} contains no samples")

    scale = 1 / (duration_s * SAMPLES_PER_SECOND)
    lines = [
        f"{total} samples in {duration_s:g} s, {total * scale:.2f} cores of active threads",
        "",
        "cumulative  self  function (cores)",
    ]
    for function, count in cumulative.most_common(top):
        lines.append(f"{count * scale:10.3f}  {own[function] * scale:.3f}  {function}")
    lines += ["", "Top functions by self time:", "", " self  function (cores)"]
    for function, count in own.most_common(top):
        lines.append(f"{count * scale:.3f}  {function}")
    return "\n".join(lines)
