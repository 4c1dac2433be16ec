from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.audit import AuditConfig, existing_audit_files, read_audit
from gateway.config.fields import Section
from gateway.config.yamlsource import load_yaml_text
from gateway.errors import ConfigProblem

BASE = Path("/etc/vaultgate")
SQLITE_STORE = "sqlite:////var/lib/vaultgate/tokens.db"
REDIS_STORE = "redis://127.0.0.1:6390/0"


def read(
    text: str, *, store_url: str | None = SQLITE_STORE, environ: dict[str, str] | None = None
) -> tuple[AuditConfig, list[str]]:
    """Read ``audit:`` from ``text`` and return the config and the problems as text."""
    document = load_yaml_text(text, "gateway.yaml", environ or {})
    problems: list[ConfigProblem] = []
    root = Section.of(document, "gateway.yaml", problems, "", 1)
    assert root is not None
    config = read_audit(root.section("audit"), BASE, store_url=store_url)
    return config, [str(problem) for problem in problems]


def test_absent_section_gives_defaults() -> None:
    config, problems = read("listen: {reverse: '127.0.0.1:8080'}\n")

    assert problems == []
    assert config == AuditConfig(file=BASE / "var/audit.jsonl")
    assert config.enabled is True
    assert config.fsync == "interval"
    assert config.fsync_interval == 1.0
    assert config.redis_stream is None


def test_redis_store_url_is_default() -> None:
    config, _ = read("{}\n", store_url=REDIS_STORE)

    assert config.redis_url == REDIS_STORE
    assert config.redis_stream is None


def test_every_key_read() -> None:
    config, problems = read(
        "audit:\n"
        "  file: /var/log/vaultgate/audit-${HOSTNAME}.jsonl\n"
        "  fsync: always\n"
        "  fsync_interval: 250ms\n"
        "  redis_stream: vaultgate:audit:${HOSTNAME}\n"
        "  redis_url: redis://audit.internal:6379/2\n"
        "  stream_max_length: 5000\n"
        "  enabled: yes\n",
        environ={"HOSTNAME": "gw-1"},
    )

    assert problems == []
    assert config == AuditConfig(
        enabled=True,
        file=Path("/var/log/vaultgate/audit-gw-1.jsonl"),
        fsync="always",
        fsync_interval=0.25,
        redis_stream="vaultgate:audit:gw-1",
        redis_url="redis://audit.internal:6379/2",
        stream_max_length=5000,
    )


def test_relative_file_follows_config_directory() -> None:
    config, _ = read("audit: {file: logs/audit.jsonl}\n")

    assert config.file == BASE / "logs/audit.jsonl"


@pytest.mark.parametrize("value", ["false", "off", "null", "''", "${AUDIT_FILE:-}"])
def test_file_turned_off(value: str) -> None:
    config, problems = read(
        f"audit:\n  file: {value}\n  redis_stream: audit\n", store_url=REDIS_STORE
    )

    assert problems == []
    assert config.file is None
    assert config.redis_stream == "audit"


def test_stream_uses_redis_store_url() -> None:
    config, problems = read("audit: {redis_stream: audit}\n", store_url=REDIS_STORE)

    assert problems == []
    assert config.redis_url == REDIS_STORE


def test_disabled_keeps_other_settings() -> None:
    config, problems = read("audit: {enabled: false, file: false}\n")

    assert problems == []
    assert config.enabled is False
    assert config.file is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "audit:\n  fsync: sometimes\n",
            "gateway.yaml:2: audit.fsync 'sometimes' is unknown (use always or interval)",
            id="fsync",
        ),
        pytest.param(
            "audit:\n  fsync_interval: soon\n",
            "gateway.yaml:2: audit.fsync_interval: 'soon' is not a duration",
            id="interval",
        ),
        pytest.param(
            "audit:\n  stream_max_length: 0\n",
            "gateway.yaml:2: audit.stream_max_length is 0; it must be at least 1",
            id="max-length",
        ),
        pytest.param(
            "audit:\n  enabled: maybe\n",
            "gateway.yaml:2: audit.enabled is 'maybe'; use true or false",
            id="enabled",
        ),
        pytest.param(
            "audit:\n  file: true\n",
            "gateway.yaml:2: audit.file must be a path, or false for no file",
            id="file-true",
        ),
        pytest.param(
            "audit:\n  fsynk: always\n",
            "gateway.yaml:2: unknown key 'fsynk' in audit (did you mean 'fsync'?)",
            id="misspelled",
        ),
        pytest.param(
            "audit:\n  redis_stream: audit\n  redis_url: 'http://user:secret@host'\n",
            "gateway.yaml:3: audit.redis_url with scheme 'http' is not a Redis URL",
            id="url-scheme",
        ),
        pytest.param(
            "audit:\n  redis_stream: audit\n",
            "gateway.yaml:2: audit.redis_stream needs a Redis server",
            id="stream-without-redis",
        ),
        pytest.param(
            "audit:\n  file: false\n",
            "gateway.yaml:2: audit has neither a file nor a redis_stream",
            id="nowhere",
        ),
    ],
)
def test_mistakes_reported_with_line(text: str, expected: str) -> None:
    _, problems = read(text)

    assert len(problems) >= 1
    assert problems[0].startswith(expected)


def test_bad_url_message_omits_password() -> None:
    _, problems = read("audit:\n  redis_stream: audit\n  redis_url: 'http://user:secret@host'\n")

    assert problems
    assert all("secret" not in problem for problem in problems)


def test_worker_gets_own_file_and_stream() -> None:
    config = AuditConfig(file=BASE / "audit.jsonl", redis_stream="vaultgate:audit")

    worker = config.for_worker(2)

    assert worker.file == BASE / "audit.worker-2.jsonl"
    assert worker.redis_stream == "vaultgate:audit:worker-2"
    assert worker.fsync == config.fsync


def test_worker_without_file_keeps_none() -> None:
    worker = AuditConfig(file=None, redis_stream="audit").for_worker(1)

    assert worker.file is None
    assert worker.redis_stream == "audit:worker-1"


def test_existing_audit_files_lists_process_files(tmp_path: Path) -> None:
    base = tmp_path / "audit.jsonl"
    names = [
        "audit.worker-2.jsonl",
        "audit.worker-1.jsonl",
        "audit.pipeline-77.jsonl",
        "audit.old.jsonl",
        "other.worker-1.jsonl",
    ]
    for name in names:
        (tmp_path / name).write_text("")

    assert [path.name for path in existing_audit_files(base)] == [
        "audit.worker-1.jsonl",
        "audit.worker-2.jsonl",
        "audit.pipeline-77.jsonl",
    ]
    base.write_text("")
    assert existing_audit_files(base)[0] == base
