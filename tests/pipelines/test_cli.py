"""``vaultgate pipeline`` as operators run it: a subprocess, with exit codes, report and memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from gateway.pipelines.specfile import load_spec
from tests.pipelines.conftest import DATA, ROOT

PATIENTS = DATA / "synthea_us_patients.csv"
SPEC = "format: csv\ncolumns:\n  - {column: SSN, class: person.ssn, deterministic: true}\n"

# Runs the command in-process and prints the peak resident memory (KiB on Linux) to stderr.
MEASURED = (
    "import resource, sys\n"
    "from gateway.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def vaultgate(*arguments: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")
    }
    return subprocess.run(
        [sys.executable, "-c", MEASURED, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
    )


def peak_kib(result: subprocess.CompletedProcess[str]) -> int:
    line = next(line for line in result.stderr.splitlines() if line.startswith("maxrss "))
    return int(line.split()[1])


def test_run_prints_report_without_values(tmp_path: Path, sqlite_config: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    result = vaultgate(
        "pipeline",
        "run",
        str(tmp_path / "spec.yaml"),
        str(PATIENTS),
        "-o",
        str(tmp_path / "out.csv"),
        "-c",
        str(sqlite_config),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 111
    assert report["cells"] == {"column SSN": {"person.ssn": 111}}
    assert "999-" not in result.stdout
    assert "rows/s" not in result.stderr  # no progress line when stderr is not a terminal


def test_run_reports_bad_row_and_exits_1(tmp_path: Path, sqlite_config: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text('SSN,NAME\n123-45-6789,a\n"broken,b\n', encoding="utf-8")
    result = vaultgate(
        "pipeline",
        "run",
        str(tmp_path / "spec.yaml"),
        str(bad),
        "-o",
        str(tmp_path / "out.csv"),
        "-c",
        str(sqlite_config),
    )
    assert result.returncode == 1
    assert f"{bad}: row 2: broken quoting" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_detokenize_needs_reveal_flag(tmp_path: Path, sqlite_config: Path) -> None:
    (tmp_path / "spec.yaml").write_text(
        "format: csv\ncolumns:\n  - {column: SSN, action: detokenize}\n", encoding="utf-8"
    )
    result = vaultgate(
        "pipeline",
        "run",
        str(tmp_path / "spec.yaml"),
        str(PATIENTS),
        "-o",
        str(tmp_path / "out.csv"),
        "-c",
        str(sqlite_config),
    )
    assert result.returncode == 1
    assert "pass --reveal" in result.stderr


def test_spec_problems_have_lines(tmp_path: Path, sqlite_config: Path) -> None:
    (tmp_path / "spec.yaml").write_text(
        "format: csv\ncolumns:\n  - {colum: SSN}\n", encoding="utf-8"
    )
    result = vaultgate(
        "pipeline",
        "run",
        str(tmp_path / "spec.yaml"),
        str(PATIENTS),
        "-o",
        str(tmp_path / "out.csv"),
        "-c",
        str(sqlite_config),
    )
    assert result.returncode == 1
    assert "spec.yaml:3: unknown key 'colum'" in result.stderr


def test_infer_proposes_a_loadable_spec(tmp_path: Path) -> None:
    result = vaultgate("pipeline", "infer", str(PATIENTS))
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    classes = {rule["column"]: rule["class"] for rule in document["columns"]}
    assert classes["SSN"] == "person.ssn"
    assert classes["FIRST"] == "person.name"
    assert classes["BIRTHDATE"] == "person.birthdate"
    assert "LAT" not in classes
    assert "LON" not in classes
    (tmp_path / "spec.yaml").write_text(result.stdout, encoding="utf-8")
    assert len(load_spec(tmp_path / "spec.yaml").columns) == len(classes)


def _write_rows(path: Path, rows: int) -> None:
    # Few distinct values, so the cache returns most tokens and the run is quick whatever its size.
    line = "{},Alice{},999-00-{:04d},an unremarkable note of some length to fill the row\n"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("ID,FIRST,SSN,NOTE\n")
        for number in range(rows):
            handle.write(line.format(number % 500, number % 50, number % 1000))


# Runs a pipeline with 256 KiB partitions, so that a few MB already make many partitions, and
# prints the peak resident memory of the process (KiB on Linux).
SMALL_PARTITIONS = (
    "import resource, sys\n"
    "from gateway.pipelines.runner import RunOptions, run_pipeline\n"
    "from gateway.pipelines.specfile import load_spec\n"
    "from tests.pipelines.conftest import settings_of\n"
    "from pathlib import Path\n"
    "spec, source, output, config = sys.argv[1:]\n"
    "run_pipeline(load_spec(Path(spec)), [source], output, settings_of(Path(config)),\n"
    "             RunOptions(partition_bytes=256 * 1024))\n"
    "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def test_memory_does_not_grow_with_the_file(tmp_path: Path, sqlite_config: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "format: csv\ncolumns:\n  - {column: SSN, deterministic: true}\n"
        "  - {column: FIRST, deterministic: true}\n",
        encoding="utf-8",
    )
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _write_rows(small, 40_000)
    _write_rows(large, 320_000)
    assert large.stat().st_size > 22_000_000

    peaks = []
    for source in (small, large):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                SMALL_PARTITIONS,
                str(spec),
                str(source),
                str(tmp_path / f"out-{source.name}"),
                str(sqlite_config),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        peaks.append(peak_kib(result))
    # Eight times the input adds 20 MB of bytes alone; a run that held the file would grow by more.
    assert peaks[1] - peaks[0] < 8 * 1024, peaks


def test_sigterm_removes_temporary_output(tmp_path: Path, sqlite_config: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    source = tmp_path / "in.csv"
    _write_rows(source, 400_000)
    out = tmp_path / "out"
    out.mkdir()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("VAULTGATE_")
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "pipeline",
            "run",
            str(spec),
            str(source),
            "-o",
            str(out / "clean.csv"),
            "-c",
            str(sqlite_config),
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not any(out.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(out.iterdir()), "the run did not start writing"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(out.iterdir()) == []
