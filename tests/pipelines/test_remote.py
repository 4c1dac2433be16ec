"""S3 and SFTP inputs and outputs, against loopback servers that the fixtures start."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from gateway.errors import MalformedRecordError, SourceError
from gateway.pipelines.runner import RunOptions, run_pipeline
from gateway.pipelines.specfile import load_spec
from tests.pipelines.conftest import DATA, settings_of
from tests.pipelines.remote_servers import SftpServer

PATIENTS = DATA / "synthea_us_patients.csv"
SPEC = "format: csv\ncolumns:\n  - {column: SSN, class: person.ssn, deterministic: true}\n"


def run(
    tmp_path: Path, config: Path, inputs: list[str], output: str, **options: object
) -> dict[str, object]:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC, encoding="utf-8")
    report = run_pipeline(
        load_spec(spec_path), inputs, output, settings_of(config), RunOptions(**options)
    )  # type: ignore[arg-type]
    return report.to_json()


def test_s3_to_s3(tmp_path: Path, sqlite_config: Path, s3_endpoint: str) -> None:
    client = boto3.client("s3")
    client.create_bucket(Bucket="landing")
    client.create_bucket(Bucket="clean")
    client.upload_file(str(PATIENTS), "landing", "in/patients.csv")
    client.upload_file(str(PATIENTS), "landing", "in/again.csv")

    report = run(tmp_path, sqlite_config, ["s3://landing/in/"], "s3://clean/out/")

    keys = sorted(entry["Key"] for entry in client.list_objects_v2(Bucket="clean")["Contents"])
    assert keys == ["out/again.csv", "out/patients.csv"]
    body = client.get_object(Bucket="clean", Key="out/patients.csv")["Body"].read().decode()
    assert "999-49-3983" not in body
    assert body.splitlines()[0] == PATIENTS.read_text(encoding="utf-8").splitlines()[0]
    assert report["rows"] == 222


def test_s3_failed_run_leaves_no_object(
    tmp_path: Path, sqlite_config: Path, s3_endpoint: str
) -> None:
    client = boto3.client("s3")
    client.create_bucket(Bucket="landing")
    lines = PATIENTS.read_text(encoding="utf-8").splitlines(keepends=True)
    client.put_object(
        Bucket="landing", Key="bad.csv", Body="".join([*lines[:5], "x,y\n", *lines[5:]]).encode()
    )

    with pytest.raises(MalformedRecordError):
        run(tmp_path, sqlite_config, ["s3://landing/bad.csv"], "s3://landing/clean.csv")
    keys = [entry["Key"] for entry in client.list_objects_v2(Bucket="landing")["Contents"]]
    assert keys == ["bad.csv"]


def test_s3_missing_object(tmp_path: Path, sqlite_config: Path, s3_endpoint: str) -> None:
    boto3.client("s3").create_bucket(Bucket="landing")
    with pytest.raises(SourceError, match=r"cannot read input s3://landing/none\.csv"):
        run(tmp_path, sqlite_config, ["s3://landing/none.csv"], str(tmp_path / "out.csv"))


def test_sftp_to_sftp(tmp_path: Path, sqlite_config: Path, sftp_server: SftpServer) -> None:
    (sftp_server.root / "outbox").mkdir()
    (sftp_server.root / "outbox" / "patients.csv").write_bytes(PATIENTS.read_bytes())
    (sftp_server.root / "clean").mkdir()
    base = f"sftp://127.0.0.1:{sftp_server.port}"

    report = run(
        tmp_path, sqlite_config, [f"{base}/outbox/patients.csv"], f"{base}/clean/patients.csv"
    )

    assert sorted(path.name for path in (sftp_server.root / "clean").iterdir()) == ["patients.csv"]
    text = (sftp_server.root / "clean" / "patients.csv").read_text(encoding="utf-8")
    assert "999-49-3983" not in text
    assert len(text.splitlines()) == 112
    assert report["rows"] == 111


def test_sftp_unknown_host_key_is_refused(
    tmp_path: Path, sqlite_config: Path, sftp_server: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    monkeypatch.setenv("VAULTGATE_SFTP_KNOWN_HOSTS", str(empty))
    with pytest.raises(SourceError, match=r"cannot list sftp://127\.0\.0\.1"):
        run(
            tmp_path,
            sqlite_config,
            [f"sftp://127.0.0.1:{sftp_server.port}/x.csv"],
            str(tmp_path / "out.csv"),
        )


def test_sftp_password_in_url_is_rejected(tmp_path: Path, sqlite_config: Path) -> None:
    with pytest.raises(SourceError, match="must not contain a password"):
        run(
            tmp_path,
            sqlite_config,
            ["sftp://user:secret@127.0.0.1/x.csv"],
            str(tmp_path / "out.csv"),
        )
