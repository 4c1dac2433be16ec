"""Whole runs on real stores: joins across files, reveal, bad input, atomic output, workers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gateway.errors import MalformedRecordError, SourceError, StoreUnavailableError
from gateway.pipelines.runner import RunOptions, run_pipeline
from gateway.pipelines.specfile import load_spec
from tests.logcapture import remember_sensitive
from tests.pipelines.conftest import (
    DATA,
    SYNTHESIZED,
    OpenVault,
    read_csv,
    settings_of,
    write_config,
)
from tests.redis_server import _free_port

PATIENTS = DATA / "synthea_us_patients.csv"
ENCOUNTERS = DATA / "synthea_us_encounters_head200.csv"

PATIENTS_SPEC = """\
format: csv
columns:
  - {column: Id, class: patient.id, deterministic: true}
  - {column: SSN, class: person.ssn, deterministic: true}
  - {column: FIRST, class: person.name, deterministic: true}
  - {column: LAST, class: person.name, deterministic: true}
  - {column: ADDRESS, class: person.address, deterministic: true}
  - {column: BIRTHDATE, class: person.birthdate, deterministic: true}
"""
ENCOUNTERS_SPEC = """\
format: csv
columns:
  - {column: PATIENT, class: patient.id, deterministic: true}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run(
    tmp_path: Path,
    config: Path,
    spec_text: str,
    inputs: list[Path],
    output: Path,
    **options: object,
) -> dict[str, object]:
    spec = load_spec(write(tmp_path / "spec.yaml", spec_text))
    report = run_pipeline(
        spec,
        [str(path) for path in inputs],
        str(output),
        settings_of(config),
        RunOptions(**options),  # type: ignore[arg-type]
    )
    return report.to_json()


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if "partial" in path.name)


def test_patient_keeps_one_token_across_files(
    tmp_path: Path, gateway_config: Path, open_vault: type[OpenVault]
) -> None:
    patients = read_csv(PATIENTS)
    remember_sensitive(*(row["SSN"] for row in patients))
    out = tmp_path / "out"
    report = run(tmp_path, gateway_config, PATIENTS_SPEC, [PATIENTS], out / "patients.csv")
    run(tmp_path, gateway_config, ENCOUNTERS_SPEC, [ENCOUNTERS], out / "encounters.csv")

    tokenized = read_csv(out / "patients.csv")
    token_of = {
        source["Id"]: clean["Id"] for source, clean in zip(patients, tokenized, strict=True)
    }
    for source, clean in zip(read_csv(ENCOUNTERS), read_csv(out / "encounters.csv"), strict=True):
        assert clean["PATIENT"] == token_of[source["PATIENT"]]
        assert clean["DESCRIPTION"] == source["DESCRIPTION"]
    for source, clean in zip(patients, tokenized, strict=True):
        assert clean["SSN"].startswith("tok_")
        assert clean["LAT"] == source["LAT"]
    assert report["rows"] == 111
    assert report["cells"]["column SSN"] == {"person.ssn": 111}  # type: ignore[index]

    vault = open_vault(gateway_config)
    assert vault.reveal([tokenized[0]["SSN"]]) == [patients[0]["SSN"]]


def test_reveal_restores_the_file(tmp_path: Path, gateway_config: Path) -> None:
    out = tmp_path / "out"
    run(tmp_path, gateway_config, PATIENTS_SPEC, [PATIENTS], out / "clean.csv")
    report = run(
        tmp_path, gateway_config, PATIENTS_SPEC, [out / "clean.csv"], out / "plain.csv", reveal=True
    )
    assert (out / "plain.csv").read_bytes() == PATIENTS.read_bytes()
    assert report["direction"] == "reveal"


def test_workers_give_the_same_output(tmp_path: Path, gateway_config: Path) -> None:
    out = tmp_path / "out"
    run(tmp_path, gateway_config, PATIENTS_SPEC, [PATIENTS], out / "one.csv", partition_bytes=2000)
    report = run(
        tmp_path,
        gateway_config,
        PATIENTS_SPEC,
        [PATIENTS],
        out / "two.csv",
        workers=2,
        partition_bytes=2000,
    )
    assert (out / "two.csv").read_bytes() == (out / "one.csv").read_bytes()
    assert report["rows"] == 111


def _with_bad_row(tmp_path: Path) -> Path:
    lines = PATIENTS.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(4, "x,y,z\n")  # data row 4: three fields where the header has 27
    return write(tmp_path / "bad.csv", "".join(lines))


def test_malformed_row_stops_without_output(tmp_path: Path, sqlite_config: Path) -> None:
    bad = _with_bad_row(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(MalformedRecordError) as caught:
        run(tmp_path, sqlite_config, PATIENTS_SPEC, [bad], out / "clean.csv", partition_bytes=1000)
    assert caught.value.file == str(bad)
    assert caught.value.row == 4
    assert caught.value.reason == "3 fields where the header has 27"
    assert not (out / "clean.csv").exists()
    assert leftovers(out) == []


def test_reject_file_takes_malformed_rows(tmp_path: Path, sqlite_config: Path) -> None:
    bad = _with_bad_row(tmp_path)
    out = tmp_path / "out"
    report = run(
        tmp_path, sqlite_config, PATIENTS_SPEC, [bad], out / "clean.csv",
        reject_file=str(out / "rejects.csv"), partition_bytes=1000,
    )  # fmt: skip
    assert report["rejected_rows"] == 1
    assert len(read_csv(out / "clean.csv")) == 111
    rejects = (out / "rejects.csv").read_text(encoding="utf-8").splitlines()
    assert rejects == [PATIENTS.read_text(encoding="utf-8").splitlines()[0], "x,y,z"]


def test_headerless_quoted_rows_keep_their_columns(tmp_path: Path, sqlite_config: Path) -> None:
    # A partition cut inside the quoted note would shift the card number into column 2 of a
    # short row, where no rule covers it, and copy it into the output in plaintext.
    card = "4111111111111111"
    source = write(tmp_path / "in.csv", "".join(f'"n{n}","a\nb",{card}\n' for n in range(60)))
    spec = 'format: csv\ncsv: {header: false}\ncolumns:\n  - {column: "3", format: pan}\n'
    out = tmp_path / "out"
    report = run(
        tmp_path, sqlite_config, spec, [source], out / "clean.csv",
        reject_file=str(out / "rejects.csv"), partition_bytes=200,
    )  # fmt: skip
    assert report["rejected_rows"] == 0
    assert report["rows"] == 60
    assert card not in (out / "clean.csv").read_text(encoding="utf-8")
    assert not (out / "rejects.csv").exists()


def test_lone_surrogate_line_goes_to_rejects(tmp_path: Path, sqlite_config: Path) -> None:
    # A lone surrogate escape parses, but the line cannot be written back as UTF-8.
    bad = '{"pan":"4111111111111111","note":"\\ud800"}\n'
    source = write(tmp_path / "in.jsonl", '{"pan":"4242424242424242"}\n' + bad)
    spec = "format: jsonl\ncolumns:\n  - {json: $.pan, format: pan}\n"
    out = tmp_path / "out"
    report = run(
        tmp_path, sqlite_config, spec, [source], out / "clean.jsonl",
        reject_file=str(out / "rejects.jsonl"),
    )  # fmt: skip
    assert report["rejected_rows"] == 1
    assert report["rows"] == 2
    clean = (out / "clean.jsonl").read_text(encoding="utf-8")
    assert clean.count("\n") == 1
    assert "4242424242424242" not in clean
    assert (out / "rejects.jsonl").read_text(encoding="utf-8") == bad


def test_value_that_does_not_fit_is_rejected(tmp_path: Path, sqlite_config: Path) -> None:
    spec = "format: csv\ncolumns:\n  - {column: SSN, format: pan}\n"
    with pytest.raises(MalformedRecordError) as caught:
        run(tmp_path, sqlite_config, spec, [PATIENTS], tmp_path / "out.csv")
    assert caught.value.row == 1
    assert caught.value.reason.startswith("column SSN: value does not fit token format pan")
    assert "999-" not in str(caught.value)


def test_missing_column_stops_before_output(tmp_path: Path, sqlite_config: Path) -> None:
    spec = "format: csv\ncolumns:\n  - {column: CARD_NUMBER}\n"
    with pytest.raises(SourceError, match="has no column CARD_NUMBER"):
        run(tmp_path, sqlite_config, spec, [PATIENTS], tmp_path / "out" / "clean.csv")
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []
    assert not (tmp_path / "out" / "clean.csv").exists()


def test_missing_column_in_second_file_stops_before_any_output(
    tmp_path: Path, sqlite_config: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_bytes(PATIENTS.read_bytes())
    (source / "b.csv").write_text("Id,NAME\n1,x\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"b\.csv has no column SSN"):
        run(tmp_path, sqlite_config, PATIENTS_SPEC, [source], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreachable_store_stops_before_output(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gateway", f"redis://127.0.0.1:{_free_port()}/0")
    with pytest.raises(StoreUnavailableError):
        run(tmp_path, config, PATIENTS_SPEC, [PATIENTS], tmp_path / "out" / "clean.csv")
    assert not (tmp_path / "out").exists()


def test_unreadable_input(tmp_path: Path, sqlite_config: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        run(
            tmp_path, sqlite_config, PATIENTS_SPEC, [tmp_path / "missing.csv"], tmp_path / "out.csv"
        )


def test_folder_in_folder_out(tmp_path: Path, sqlite_config: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.csv").write_bytes(PATIENTS.read_bytes())
    (source / "b.csv").write_bytes(PATIENTS.read_bytes())
    report = run(tmp_path, sqlite_config, PATIENTS_SPEC, [source], tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.csv", "b.csv"]
    assert (tmp_path / "out" / "a.csv").read_bytes() == (tmp_path / "out" / "b.csv").read_bytes()
    assert report["rows"] == 222


def test_free_text_spans_replaced_in_place(
    tmp_path: Path, sqlite_config: Path, open_vault: type[OpenVault]
) -> None:
    notes = [
        "Paid with 5555 5555 5555 4444, receipt to jo@example.com.",
        "Call +1-903-140-4508 about SSN 588-46-6702 (no card).",
        "Nothing sensitive at 40.79815162129809, -96.67877314083218.",
    ]
    remember_sensitive("jo@example.com", "588-46-6702", "+1-903-140-4508")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "note"])
    writer.writerows([[str(number), note] for number, note in enumerate(notes)])
    source = write(tmp_path / "notes.csv", buffer.getvalue())
    spec = "format: csv\nscan:\n  - {column: note}\n"
    report = run(tmp_path, sqlite_config, spec, [source], tmp_path / "clean.csv")

    clean = [row["note"] for row in read_csv(tmp_path / "clean.csv")]
    assert clean[0].startswith("Paid with 5555 55")
    assert clean[0].endswith(" 4444, receipt to tok_" + clean[0][-33:-1] + ".")
    assert "jo@example.com" not in clean[0]
    assert clean[1].startswith("Call tok_")
    assert " about SSN tok_" in clean[1]
    assert clean[1].endswith(" (no card).")
    assert clean[2] == notes[2]
    assert report["detections"] == {"card": 1, "email": 1, "phone": 1, "ssn": 1}

    revealed = run(
        tmp_path, sqlite_config, spec, [tmp_path / "clean.csv"], tmp_path / "plain.csv", reveal=True
    )
    assert [row["note"] for row in read_csv(tmp_path / "plain.csv")] == notes
    assert revealed["rows"] == 3


VISA_SPEC = """\
format: fixed_width
fixed_width:
  record_length: 168
  encoding: {encoding}
  record_types:
    - {{name: tc05, positions: 1-4, value: "0500"}}
    - {{name: tc05_tcr1, positions: 1-4, value: "0501"}}
columns:
  - {{positions: 5-20, record: tc05, format: pan, class: card.pan, deterministic: true}}
scan:
  - {{positions: 24-73, record: tc05_tcr1}}
"""


def test_visa_files_in_ascii_and_ebcdic(
    tmp_path: Path, gateway_config: Path, open_vault: type[OpenVault]
) -> None:
    results = {}
    for encoding, name in (
        ("ascii", "visa_base2_style_sample_ascii.ctf"),
        ("cp500", "visa_base2_style_sample_ebcdic_cp500.ctf"),
    ):
        source = SYNTHESIZED / name
        run(
            tmp_path, gateway_config, VISA_SPEC.format(encoding=encoding), [source], tmp_path / name
        )
        original = source.read_bytes().decode(encoding).split("\n")
        clean = (tmp_path / name).read_bytes().decode(encoding).split("\n")
        assert len(clean) == len(original)
        for before, after in zip(original, clean, strict=True):
            if before.startswith("0500"):
                assert after[:4] + after[20:] == before[:4] + before[20:]
                assert after[4:10] + after[16:20] == before[4:10] + before[16:20]
                assert after[4:20] != before[4:20]
            elif before.startswith("0501"):
                phone = before.index("617-555-01")
                assert after[:phone] == before[:phone]
                assert after[phone + 12 :] == before[phone + 12 :]
                assert after[phone + 3] == after[phone + 7] == "-"
                assert after[phone : phone + 12] != before[phone : phone + 12]
            else:
                assert after == before
        results[encoding] = clean

    # Deterministic tokens: the same card and phone number get the same token in both files.
    assert results["ascii"] == results["cp500"]
    vault = open_vault(gateway_config)
    assert vault.reveal([results["ascii"][1][4:20]]) == ["4242424242424242"]


def test_ipm_file_card_numbers(
    tmp_path: Path, gateway_config: Path, open_vault: type[OpenVault]
) -> None:
    from gateway.pipelines.ipm import IpmFormat
    from gateway.pipelines.spec import IpmOptions

    spec = "format: ipm\ncolumns:\n  - {element: 2, format: pan, class: card.pan, deterministic: true}\n"
    source = SYNTHESIZED / "mastercard_ipm_sample_1014blocked.ipm"
    run(tmp_path, gateway_config, spec, [source], tmp_path / "clean.ipm")
    assert (tmp_path / "clean.ipm").stat().st_size == source.stat().st_size

    file_format = IpmFormat(IpmOptions())
    with open(tmp_path / "clean.ipm", "rb") as stream:
        file_format.open(stream, "clean.ipm")
        records = [
            row.record for part in file_format.partitions(stream) for row in file_format.parse(part)
        ]
    tokens = [record.elements[2].decode("cp500") for record in records]
    originals = [row["DE2"] for row in read_csv(SYNTHESIZED / "ipm_input.csv")]
    assert all(token != original for token, original in zip(tokens, originals, strict=True))
    assert open_vault(gateway_config).reveal(tokens) == originals


def test_json_lines(tmp_path: Path, sqlite_config: Path) -> None:
    source = write(
        tmp_path / "in.jsonl",
        '{"name": "Jo", "card": {"number": "4242424242424242"}, "amount": 12.50}\n'
        '{"name": "Al", "card": {"number": null}, "amount": 3}\n',
    )
    spec = "format: jsonl\ncolumns:\n  - {json: $.card.number, format: pan_last4}\n  - {json: $.name}\n"
    run(tmp_path, sqlite_config, spec, [source], tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith('{"name":"tok_')
    assert lines[0].endswith('4242"},"amount":12.50}')
    assert '"card":{"number":null},"amount":3}' in lines[1]
