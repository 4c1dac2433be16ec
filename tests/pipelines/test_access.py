"""Pipelines under the policy: who may reveal, in which view, and the audit trail of the run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.verify import verify_audit_file
from gateway.config.loader import load_config
from gateway.pipelines.access import resolve_classes
from gateway.pipelines.spec import PipelineSpec
from gateway.pipelines.specfile import load_spec
from gateway.tokens.keys import load_key_ring
from tests.logcapture import remember_sensitive
from tests.pipelines.conftest import ROOT

SSNS = ["123-45-6789", "234-56-7890", "345-67-8901"]
remember_sensitive(*SSNS)

CONFIG = """\
store: {url: "sqlite:///tokens.db"}
keys: {file: keys.yaml, development: true}
audit: {file: audit.jsonl}
routes: []
clients:
  analyst: {keys: [{secret: analyst-key-0123456789}], roles: [analyst]}
  support: {keys: [{secret: support-key-0123456789}], roles: [support]}
  intake: {keys: [{secret: intake-key-0123456789}], roles: [intake]}
classes:
  person.ssn: {format: uuid, deterministic: true, mask: last4}
roles:
  analyst:
    grants: [{actions: [tokenize, detokenize], classes: [person.ssn], view: plain}]
  support:
    grants: [{actions: [detokenize], classes: [person.ssn], view: masked}]
  intake:
    grants: [{actions: [tokenize], classes: [person.ssn]}]
"""

TOKENIZE = "format: csv\ncolumns:\n  - {column: SSN, class: person.ssn, deterministic: true}\n"
REVEAL = "format: csv\ncolumns:\n  - {column: SSN, action: detokenize}\n"


def pipeline(
    directory: Path, *arguments: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("VAULTGATE_")
    }
    if key is not None:
        environment["VAULTGATE_CLIENT_KEY"] = key
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "pipeline",
            "run",
            *arguments,
            "-c",
            str(directory / "gateway.yaml"),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture
def tokenized(tmp_path: Path) -> Path:
    """A configuration with a policy, and a CSV of SSNs tokenized by the intake client."""
    (tmp_path / "gateway.yaml").write_text(CONFIG)
    (tmp_path / "tokenize.yaml").write_text(TOKENIZE)
    (tmp_path / "reveal.yaml").write_text(REVEAL)
    with (tmp_path / "plain.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "SSN"])
        writer.writerows([[str(index), ssn] for index, ssn in enumerate(SSNS)])
    result = pipeline(
        tmp_path,
        str(tmp_path / "tokenize.yaml"),
        str(tmp_path / "plain.csv"),
        "-o",
        str(tmp_path / "clean.csv"),
        "--client",
        "intake",
        key="intake-key-0123456789",
    )
    assert result.returncode == 0, result.stderr
    return tmp_path


def ssn_column(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return [row["SSN"] for row in csv.DictReader(handle)]


def audit_records(directory: Path) -> list[dict[str, object]]:
    records = []
    for path in sorted(directory.glob("audit.pipeline-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def reveal(
    directory: Path, client: str | None, key: str | None, *extra: str
) -> subprocess.CompletedProcess[str]:
    arguments = [
        str(directory / "reveal.yaml"),
        str(directory / "clean.csv"),
        "-o",
        str(directory / "out.csv"),
        "--reveal",
        *extra,
    ]
    if client is not None:
        arguments += ["--client", client]
    return pipeline(directory, *arguments, key=key)


def test_tokenizing_run_is_audited_per_cell(tokenized: Path) -> None:
    records = audit_records(tokenized)
    assert [(r["action"], r["outcome"], r["client"], r["class_name"]) for r in records] == [
        ("tokenize", "allowed", "intake", "person.ssn")
    ] * 3
    text = "".join(path.read_text() for path in tokenized.glob("audit*.jsonl"))
    for ssn in SSNS:
        assert ssn not in text
    assert all(token not in text for token in ssn_column(tokenized / "clean.csv"))


def test_reveal_needs_a_client_and_its_key(tokenized: Path) -> None:
    result = reveal(tokenized, None, None)
    assert result.returncode == 1
    assert "--reveal needs --client" in result.stderr
    result = reveal(tokenized, "analyst", "wrong-key-0123456789")
    assert result.returncode == 1
    assert "invalid API key for client 'analyst'" in result.stderr
    assert not (tokenized / "out.csv").exists()


def test_reveal_writes_what_the_grant_allows(tokenized: Path) -> None:
    result = reveal(tokenized, "analyst", "analyst-key-0123456789")
    assert result.returncode == 0, result.stderr
    assert ssn_column(tokenized / "out.csv") == SSNS

    result = reveal(tokenized, "support", "support-key-0123456789", "--view", "plain")
    assert result.returncode == 0, result.stderr
    assert ssn_column(tokenized / "out.csv") == ["***-**-6789", "***-**-7890", "***-**-8901"]

    result = reveal(tokenized, "analyst", "analyst-key-0123456789", "--view", "redacted")
    assert ssn_column(tokenized / "out.csv") == ["[REDACTED]"] * 3

    reveals = [record for record in audit_records(tokenized) if record["action"] == "detokenize"]
    assert [(record["client"], record["view"]) for record in reveals] == (
        [("analyst", "plain")] * 3 + [("support", "masked")] * 3 + [("analyst", "redacted")] * 3
    )


def test_reveal_without_grant_is_rejected_and_audited(tokenized: Path) -> None:
    result = reveal(tokenized, "intake", "intake-key-0123456789")
    assert result.returncode == 1
    assert "may not detokenize class 'person.ssn'" in result.stderr
    assert not (tokenized / "out.csv").exists()
    denied = [record for record in audit_records(tokenized) if record["outcome"] == "denied"]
    assert denied
    assert all(record["client"] == "intake" for record in denied)


def test_run_audit_files_verify(tokenized: Path) -> None:
    config = load_config(tokenized / "gateway.yaml", environ={})
    key = load_key_ring(config.keys, base_dir=tokenized).audit_key
    files = list(tokenized.glob("audit.pipeline-*.jsonl"))
    assert files
    for path in files:
        assert verify_audit_file(path, key).ok


def test_undefined_class_or_contradicting_setting_stops_the_run(tokenized: Path) -> None:
    (tokenized / "bad.yaml").write_text(
        "format: csv\ncolumns:\n  - {column: SSN, class: person.taxid}\n"
    )
    result = pipeline(
        tokenized,
        str(tokenized / "bad.yaml"),
        str(tokenized / "plain.csv"),
        "-o",
        str(tokenized / "x.csv"),
    )
    assert result.returncode == 1
    assert "class 'person.taxid', which the configuration does not define" in result.stderr
    (tokenized / "bad.yaml").write_text(
        "format: csv\ncolumns:\n  - {column: SSN, class: person.ssn, deterministic: false}\n"
    )
    result = pipeline(
        tokenized,
        str(tokenized / "bad.yaml"),
        str(tokenized / "plain.csv"),
        "-o",
        str(tokenized / "x.csv"),
    )
    assert result.returncode == 1
    assert "fixes it to True" in result.stderr
    assert not (tokenized / "x.csv").exists()


def test_class_settings_apply_to_the_column(tokenized: Path) -> None:
    # person.ssn is deterministic in the configuration, and the spec need not say so.
    (tokenized / "plain2.yaml").write_text(
        "format: csv\ncolumns:\n  - {column: SSN, class: person.ssn}\n"
    )
    result = pipeline(
        tokenized,
        str(tokenized / "plain2.yaml"),
        str(tokenized / "plain.csv"),
        "-o",
        str(tokenized / "again.csv"),
        "--client",
        "intake",
        key="intake-key-0123456789",
    )
    assert result.returncode == 0, result.stderr
    assert ssn_column(tokenized / "again.csv") == ssn_column(tokenized / "clean.csv")


def resolved_scan(
    config_text: str, spec_text: str, directory: Path
) -> tuple[PipelineSpec, list[str]]:
    (directory / "gateway.yaml").write_text(config_text)
    (directory / "spec.yaml").write_text(spec_text)
    config = load_config(directory / "gateway.yaml", environ={})
    return resolve_classes(load_spec(directory / "spec.yaml"), config.policy)


def test_scan_detector_class_must_be_defined(tmp_path: Path) -> None:
    spec_text = "format: csv\nscan:\n  - {column: NOTES, detectors: [ssn, email]}\n"

    _, problems = resolved_scan(CONFIG, spec_text, tmp_path)

    assert len(problems) == 1
    assert "email detections in class 'contact.email'" in problems[0]
    assert "does not define" in problems[0]


def test_scan_detections_take_class_settings(tmp_path: Path) -> None:
    spec_text = (
        "format: csv\nscan:\n"
        "  - {column: NOTES, detectors: [ssn], deterministic: false, ttl: 1h,"
        " formats: {ssn: alphanumeric}}\n"
    )

    spec, problems = resolved_scan(CONFIG, spec_text, tmp_path)

    assert problems == []
    [scan] = spec.scans
    assert scan.formats == {"ssn": "uuid"}
    assert scan.settings("ssn") == (True, None)


def test_scan_without_classes_keeps_its_settings(tmp_path: Path) -> None:
    config_text = CONFIG[: CONFIG.index("clients:")]
    spec_text = "format: csv\nscan:\n  - {column: NOTES, detectors: [ssn], deterministic: false}\n"

    spec, problems = resolved_scan(config_text, spec_text, tmp_path)

    assert problems == []
    assert spec.scans[0].settings("ssn") == (False, None)


def test_undefined_scan_class_stops_the_run(tokenized: Path) -> None:
    (tokenized / "scan.yaml").write_text(
        "format: csv\nscan:\n  - {column: SSN, detectors: [ssn, phone]}\n"
    )

    result = pipeline(
        tokenized,
        str(tokenized / "scan.yaml"),
        str(tokenized / "plain.csv"),
        "-o",
        str(tokenized / "scanned.csv"),
    )

    assert result.returncode == 1
    assert "phone detections in class 'contact.phone'" in result.stderr
    assert not (tokenized / "scanned.csv").exists()


def test_two_workers_close_audit_cleanly(tokenized: Path) -> None:
    result = pipeline(
        tokenized,
        str(tokenized / "tokenize.yaml"),
        str(tokenized / "plain.csv"),
        "-o",
        str(tokenized / "two.csv"),
        "--workers",
        "2",
        "--client",
        "intake",
        key="intake-key-0123456789",
    )

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("DEVELOPMENT key") == 1
    assert ssn_column(tokenized / "two.csv") == ssn_column(tokenized / "clean.csv")
