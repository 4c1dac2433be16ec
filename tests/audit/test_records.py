from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.audit.events import AuditEvent, Outcome
from gateway.audit.records import (
    GENESIS,
    RECORD_FIELDS,
    ChainPosition,
    CheckedRecord,
    LineProblem,
    canonical_json,
    check_line,
    format_time,
    seal_events,
)
from tests.audit.conftest import AUDIT_KEY, MOMENT, OTHER_KEY, make_event, make_records

# The canonical encoding of the first record of make_event(1) at MOMENT, without its mac.
VECTOR_BODY = (
    b'{"action":"detokenize","class_name":"card.pan","client":"backend",'
    b'"connection":"stripe","operation":"create-payment-method","outcome":"allowed",'
    b'"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"reason":null,"seq":1,"time":"2025-06-01T12:00:00.123Z",'
    b'"token_fingerprint":"0000000000000001","view":"plain"}'
)
VECTOR_MAC = "f51241c48a8dda1b670a15bf8a5087cb957d1ab8b51ec2be18c244055efdb1e9"


def test_record_mac_test_vector() -> None:
    record = make_records(1)[0]

    # The mac is HMAC-SHA256 under the key over the body, computed here without vaultgate code.
    assert hmac.new(AUDIT_KEY.reveal(), VECTOR_BODY, hashlib.sha256).hexdigest() == VECTOR_MAC
    assert record.mac == VECTOR_MAC
    assert record.seq == 1
    expected_line = VECTOR_BODY.replace(
        b'"operation"', f'"mac":"{VECTOR_MAC}","operation"'.encode()
    )
    assert record.line == expected_line + b"\n"


def test_records_chain_by_mac() -> None:
    first, second, third = make_records(3)

    assert [record.seq for record in (first, second, third)] == [1, 2, 3]
    assert json.loads(first.line)["prev"] == GENESIS
    assert json.loads(second.line)["prev"] == first.mac
    assert json.loads(third.line)["prev"] == second.mac


def test_sealing_continues_after_position() -> None:
    earlier = make_records(4)
    position = ChainPosition(earlier[-1].seq, earlier[-1].mac)

    continued = make_records(2, after=position)

    assert continued[0].seq == 5
    assert json.loads(continued[0].line)["prev"] == earlier[-1].mac


def test_record_fields_are_event_and_chain() -> None:
    record = json.loads(make_records(1)[0].line)
    event_fields = {field.name for field in dataclasses.fields(AuditEvent)}

    assert set(record) == RECORD_FIELDS
    assert event_fields | {"seq", "time", "prev", "mac"} == RECORD_FIELDS
    assert record["outcome"] == "allowed"


def test_record_keeps_nulls_and_unicode() -> None:
    event = AuditEvent("tokenize", Outcome.DENIED, None, "käse", "POST /v1/tokenize")

    record = seal_events([event], ChainPosition(), AUDIT_KEY.reveal(), MOMENT)[0]

    assert '"connection":"käse"'.encode() in record.line
    assert b'"client":null' in record.line
    assert b'"class_name":null' in record.line


def test_canonical_json_sorts_and_compacts() -> None:
    assert canonical_json({"b": 1, "a": [None, "é"]}) == '{"a":[null,"é"],"b":1}'.encode()


def test_unencodable_event_raises() -> None:
    event = dataclasses.replace(make_event(1), reason="\ud800")

    with pytest.raises(UnicodeEncodeError):
        seal_events([event], ChainPosition(), AUDIT_KEY.reveal(), MOMENT)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(MOMENT, "2025-06-01T12:00:00.123Z", id="milliseconds-truncated"),
        pytest.param(
            datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "2025-01-02T03:04:05.000Z", id="zero"
        ),
        pytest.param(
            datetime(2025, 1, 2, 3, 4, 5, 7000, tzinfo=timezone(timedelta(hours=2))),
            "2025-01-02T01:04:05.007Z",
            id="converted-to-utc",
        ),
    ],
)
def test_format_time(moment: datetime, expected: str) -> None:
    assert format_time(moment) == expected


def test_check_line_accepts_record() -> None:
    record = make_records(1)[0]

    checked = check_line(record.line, AUDIT_KEY.reveal())

    assert checked == CheckedRecord(seq=1, prev=GENESIS, mac=record.mac)


def _with(line: bytes, **changes: object) -> bytes:
    """Return ``line`` with fields changed and re-encoded canonically, keeping the old mac."""
    record = json.loads(line) | changes
    return canonical_json(record) + b"\n"


GOOD_LINE = make_records(1)[0].line


@pytest.mark.parametrize(
    ("line", "kind", "detail"),
    [
        pytest.param(GOOD_LINE[:-1], "incomplete line", "newline", id="no-newline"),
        pytest.param(GOOD_LINE[:40] + b"\n", "invalid JSON", "", id="cut-short"),
        pytest.param(b"\n", "invalid JSON", "", id="empty"),
        pytest.param(b"\xff\xfe\n", "invalid JSON", "", id="not-utf8"),
        pytest.param(b"[1, 2]\n", "invalid record", "not an object", id="array"),
        pytest.param(
            _with(GOOD_LINE, extra=1), "invalid record", "unknown fields extra", id="unknown-field"
        ),
        pytest.param(
            canonical_json({k: v for k, v in json.loads(GOOD_LINE).items() if k != "view"}) + b"\n",
            "invalid record",
            "missing fields view",
            id="missing-field",
        ),
        pytest.param(_with(GOOD_LINE, seq=True), "invalid record", "seq", id="bool-seq"),
        pytest.param(_with(GOOD_LINE, seq=0), "invalid record", "seq", id="zero-seq"),
        pytest.param(_with(GOOD_LINE, seq=1.0), "invalid record", "seq", id="float-seq"),
        pytest.param(_with(GOOD_LINE, mac="AB" * 32), "invalid record", "mac", id="uppercase-mac"),
        pytest.param(_with(GOOD_LINE, prev="0" * 63), "invalid record", "prev", id="short-prev"),
        pytest.param(
            _with(GOOD_LINE, time="2025-06-01T12:00:00Z"),
            "invalid record",
            "time",
            id="no-milliseconds",
        ),
        pytest.param(
            _with(GOOD_LINE, outcome="maybe"), "invalid record", "outcome", id="unknown-outcome"
        ),
        pytest.param(_with(GOOD_LINE, action=None), "invalid record", "action", id="null-action"),
        pytest.param(_with(GOOD_LINE, client=7), "invalid record", "client", id="number-client"),
        pytest.param(_with(GOOD_LINE, client="ops"), "invalid mac", "changed", id="edited-field"),
        pytest.param(
            GOOD_LINE.replace(b'"seq":1', b'"seq": 1'), "not canonical", "canonical", id="space"
        ),
        pytest.param(
            GOOD_LINE.replace(b'"view":"plain"', b'"view":"pl\\u0061in"'),
            "not canonical",
            "canonical",
            id="escape",
        ),
        pytest.param(
            GOOD_LINE.replace(b'"view":"plain"}', b'"view":"masked","view":"plain"}'),
            "not canonical",
            "canonical",
            id="duplicate-key",
        ),
    ],
)
def test_check_line_rejects(line: bytes, kind: str, detail: str) -> None:
    checked = check_line(line, AUDIT_KEY.reveal())

    assert isinstance(checked, LineProblem)
    assert checked.kind == kind
    assert detail in checked.detail


def test_check_line_rejects_other_key() -> None:
    line = make_records(1, key=OTHER_KEY)[0].line

    checked = check_line(line, AUDIT_KEY.reveal())

    assert isinstance(checked, LineProblem)
    assert checked.kind == "invalid mac"


def test_line_equals_full_canonical_encoding_for_tricky_text() -> None:
    # The line is built by inserting the mac; a reason that imitates the key must not fool it.
    event = AuditEvent(
        action="detokenize",
        outcome=Outcome.DENIED,
        client='x","operation":"y',
        connection=',"operation":',
        operation="POST /v1/detokenize",
        reason=',"operation":"fake"',
    )
    [record] = seal_events([event], ChainPosition(), b"k" * 32, datetime(2026, 1, 1, tzinfo=UTC))
    fields = json.loads(record.line)
    assert record.line == canonical_json(fields) + b"\n"
    assert fields["operation"] == "POST /v1/detokenize"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('quote " and backslash \\', id="escapes"),
        pytest.param("tab\tnew line\ncarriage\rnul\x00bell\x07", id="control-characters"),
        pytest.param("\u2028\u2029\x7f", id="separators-and-delete"),
        pytest.param("emoji 🙂 and käse", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_sealed_line_is_canonical_for_any_text(text: str) -> None:
    event = AuditEvent(
        action="tokenize",
        outcome=Outcome.FAILED,
        client=text,
        connection=None,
        operation=text or "op",
        class_name=text,
        token_fingerprint=None,
        view=text,
        reason=text,
    )

    [record] = seal_events([event], ChainPosition(7, "ab" * 32), AUDIT_KEY.reveal(), MOMENT)

    fields = json.loads(record.line)
    assert record.line == canonical_json(fields) + b"\n"
    assert check_line(record.line, AUDIT_KEY.reveal()) == CheckedRecord(8, "ab" * 32, record.mac)
    assert fields["reason"] == text
