"""Load a pipeline spec from YAML, reporting every mistake with its file, line and a fix.

Validation uses the same helpers as route files (``gateway.config.fields``) and goes on after a
mistake, so that one run lists all of them.
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path
from typing import Final

from gateway.config.fields import Section
from gateway.config.yamlsource import YamlList, load_yaml_file
from gateway.engine.jsonpath import JsonPathSyntaxError, parse_json_path
from gateway.errors import ConfigError, ConfigProblem
from gateway.pipelines.detectors import DETECTOR_NAMES
from gateway.pipelines.ipmlayout import ELEMENTS
from gateway.pipelines.spec import (
    DEFAULT_BATCH_SIZE,
    LENGTH_PRESERVING_FORMATS,
    UUID_TOKEN_LENGTH,
    Action,
    ColumnRule,
    CsvOptions,
    FieldRef,
    FixedWidthOptions,
    InputFormat,
    IpmOptions,
    PipelineSpec,
    RecordType,
    ScanRule,
    default_detection_format,
)
from gateway.tokens.formats import format_names

_POSITIONS: Final = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_RULE_KEYS: Final = ("action", "format", "deterministic", "ttl", "class")
_SELECTOR_KEYS: Final = ("column", "json", "positions", "element")
_FIELD_KEYS: Final = (*_SELECTOR_KEYS, "record")

_SELECTOR_OF_FORMAT: Final = {
    InputFormat.CSV: "column",
    InputFormat.JSONL: "json",
    InputFormat.FIXED_WIDTH: "positions",
    InputFormat.IPM: "element",
}


def load_spec(path: Path) -> PipelineSpec:
    """Read and validate a spec file; raise ``ConfigError`` listing every problem with its line."""
    document = load_yaml_file(path)
    problems: list[ConfigProblem] = []
    file = str(path)
    root = Section.of(document, file, problems, "", 1)
    if root is None:
        raise ConfigError(problems)
    spec = _build_spec(root, file)
    if problems or spec is None:
        raise ConfigError(problems)
    return spec


def _build_spec(root: Section, file: str) -> PipelineSpec | None:
    root.check_keys(
        ("format", "input", "output", "csv", "fixed_width", "ipm", "columns", "scan", "batch_size")
    )
    format_text = root.string("format", required=True)
    try:
        input_format = InputFormat(format_text) if format_text else None
    except ValueError:
        root.problem(
            "format",
            f"unknown input format {format_text!r}",
            "use " + ", ".join(item.value for item in InputFormat),
        )
        input_format = None
    if input_format is None:
        return None

    csv_options = _csv_options(root.section("csv"))
    fixed_width = _fixed_width_options(root.section("fixed_width"))
    if input_format is InputFormat.FIXED_WIDTH and fixed_width is None:
        root.problem(
            None,
            "a fixed_width input needs a fixed_width section with record_length",
            "fixed_width: {record_length: 168, encoding: cp500}",
        )
        return None
    ipm_options = _ipm_options(root.section("ipm"))
    record_types = {item.name for item in fixed_width.record_types} if fixed_width else set()

    columns = [
        _column_rule(section, input_format, record_types)
        for section in _rule_sections(root, "columns")
    ]
    scans = [
        _scan_rule(section, input_format, record_types) for section in _rule_sections(root, "scan")
    ]
    batch_size = root.integer("batch_size", DEFAULT_BATCH_SIZE, minimum=1)
    return PipelineSpec(
        source=file,
        format=input_format,
        inputs=tuple(root.string_list("input", [])),
        output=root.string("output"),
        csv=csv_options,
        fixed_width=fixed_width,
        ipm=ipm_options,
        columns=tuple(rule for rule in columns if rule is not None),
        scans=tuple(rule for rule in scans if rule is not None),
        batch_size=batch_size,
    )


def _single_character(section: Section, key: str, default: str) -> str:
    text = section.string(key, default)
    if text is None or len(text) != 1:
        section.problem(key, f"{section.name_of(key)} must be exactly one character")
        return default
    return text


def _encoding(section: Section, key: str, default: str) -> str:
    name = section.string(key, default) or default
    try:
        codecs.lookup(name)
    except LookupError:
        section.problem(key, f"unknown encoding {name!r}", "for example utf-8, ascii or cp500")
        return default
    return name


def _csv_options(section: Section | None) -> CsvOptions:
    if section is None:
        return CsvOptions()
    section.check_keys(("delimiter", "quotechar", "header", "encoding"))
    return CsvOptions(
        delimiter=_single_character(section, "delimiter", ","),
        quotechar=_single_character(section, "quotechar", '"'),
        header=section.boolean("header", True),
        encoding=_encoding(section, "encoding", "utf-8"),
    )


def _fixed_width_options(section: Section | None) -> FixedWidthOptions | None:
    if section is None:
        return None
    section.check_keys(("record_length", "separator", "encoding", "record_types"))
    if not section.has("record_length"):
        section.problem(None, "fixed_width.record_length is missing", "record_length: 168")
        return None
    record_length = section.integer("record_length", 1, minimum=1)
    encoding = _encoding(section, "encoding", "ascii")
    if not _is_single_byte(encoding):
        section.problem(
            "encoding",
            f"fixed-width records need a single-byte encoding, not {encoding}",
            "use ascii, latin-1 or cp500",
        )
    record_types: list[RecordType] = []
    raw_types = section.raw("record_types")
    if isinstance(raw_types, YamlList):
        for index, item in enumerate(raw_types):
            where = f"fixed_width.record_types[{index}]"
            type_section = Section.of(
                item, section.file, section.problems, where, raw_types.line_of(index)
            )
            if type_section is not None:
                record_type = _record_type(type_section, record_length)
                if record_type is not None:
                    record_types.append(record_type)
    elif raw_types is not None:
        section.problem("record_types", "fixed_width.record_types must be a list")
    return FixedWidthOptions(
        record_length=record_length,
        separator=section.string("separator", "\n") or "",
        encoding=encoding,
        record_types=tuple(record_types),
    )


def _is_single_byte(encoding: str) -> bool:
    """Return whether ``encoding`` maps each byte to one character, whatever comes before it.

    Those are ASCII, Latin-1 and the codecs built on a table of 256 characters, such as cp500,
    cp1252 and koi8-r. Multi-byte codecs (utf-8, shift_jis, gb18030) and stateful ones
    (iso2022_jp, hz) are not.
    """
    info = codecs.lookup(encoding)
    if info.name in ("ascii", "iso8859-1"):
        return True
    module = sys.modules.get(info.incrementaldecoder.__module__)
    table = getattr(module, "decoding_table", None)
    return isinstance(table, str) and len(table) == 256


def _record_type(section: Section, record_length: int) -> RecordType | None:
    section.check_keys(("name", "positions", "value"))
    name = section.string("name", required=True)
    span = _positions(section, record_length)
    value = section.string("value", required=True)
    if name is None or span is None or value is None:
        return None
    width = span[1] - span[0]
    if len(value) != width:
        section.problem(
            "value", f"value {value!r} has {len(value)} characters, but the positions span {width}"
        )
        return None
    return RecordType(name, span[0], span[1], value)


def _positions(section: Section, record_length: int | None) -> tuple[int, int] | None:
    text = section.string("positions", required=True)
    if text is None:
        return None
    match = _POSITIONS.match(text)
    if match is None:
        section.problem("positions", f"positions {text!r} is not FIRST-LAST", "for example 5-20")
        return None
    first, last = int(match.group(1)), int(match.group(2))
    if not 1 <= first <= last:
        section.problem(
            "positions", f"positions {text!r}: FIRST must be 1 or more and at most LAST"
        )
        return None
    if record_length is not None and last > record_length:
        section.problem(
            "positions", f"positions {text!r} end after the record length {record_length}"
        )
        return None
    return first - 1, last


def _ipm_options(section: Section | None) -> IpmOptions:
    if section is None:
        return IpmOptions()
    section.check_keys(("encoding", "blocked"))
    encoding = _encoding(section, "encoding", "cp500")
    # Element lengths count bytes, and a replaced element must keep its length in bytes.
    if not _is_single_byte(encoding):
        section.problem(
            "encoding",
            f"IPM files need a single-byte encoding, not {encoding}",
            "use cp500 (EBCDIC) or ascii",
        )
    return IpmOptions(encoding=encoding, blocked=section.boolean("blocked", True))


def _rule_sections(root: Section, key: str) -> list[Section]:
    raw = root.raw(key)
    if raw is None:
        return []
    if not isinstance(raw, YamlList):
        root.problem(key, f"{key} must be a list of field rules")
        return []
    sections = []
    for index, item in enumerate(raw):
        section = Section.of(item, root.file, root.problems, f"{key}[{index}]", raw.line_of(index))
        if section is not None:
            sections.append(section)
    return sections


def _field_ref(
    section: Section, input_format: InputFormat, record_types: set[str]
) -> FieldRef | None:
    expected = _SELECTOR_OF_FORMAT[input_format]
    present = [key for key in _SELECTOR_KEYS if key in section.mapping]
    if present != [expected]:
        found = ", ".join(present) if present else "none"
        section.problem(
            None,
            f"{section.where} needs exactly one field selector, {expected}, for a "
            f"{input_format} input; found {found}",
        )
        return None

    if input_format is InputFormat.CSV:
        name = section.string("column", required=True)
        return FieldRef(column=name) if name is not None else None
    if input_format is InputFormat.JSONL:
        text = section.string("json", required=True)
        if text is None:
            return None
        try:
            return FieldRef(json=parse_json_path(text))
        except JsonPathSyntaxError as exc:
            section.problem("json", f"json {text!r}: {exc}", "for example $.patient.ssn")
            return None
    if input_format is InputFormat.IPM:
        number = section.integer("element", 0, minimum=2)
        if number and (number not in ELEMENTS or ELEMENTS[number][2]):
            section.problem(
                "element",
                f"data element {number} is not a text element of the IPM layout",
                "use one of "
                + ", ".join(str(key) for key, (_, _, binary) in ELEMENTS.items() if not binary),
            )
            return None
        return FieldRef(element=number) if number else None

    span = _positions(section, None)
    record = section.string("record")
    if record is not None and record not in record_types:
        section.problem(
            "record",
            f"record type {record!r} is not declared",
            "declare it under fixed_width.record_types",
        )
        return None
    if span is None:
        return None
    return FieldRef(start=span[0], end=span[1], record=record)


def _column_rule(
    section: Section, input_format: InputFormat, record_types: set[str]
) -> ColumnRule | None:
    section.check_keys((*_FIELD_KEYS, *_RULE_KEYS))
    field_ref = _field_ref(section, input_format, record_types)
    action_text = section.string("action", "tokenize") or "tokenize"
    try:
        action = Action(action_text)
    except ValueError:
        section.problem("action", f"action must be tokenize or detokenize, not {action_text!r}")
        return None
    if action is Action.DETOKENIZE:
        for key in ("format", "deterministic", "ttl", "class"):
            if section.has(key):
                section.problem(
                    key, f"{key} applies to tokenize only; a detokenize finds it in the token"
                )
    token_format = _token_format(section, "format", "uuid")
    rule = ColumnRule(
        field=field_ref or FieldRef(),
        action=action,
        format=token_format,
        deterministic=section.boolean("deterministic", False),
        ttl=section.duration("ttl", None),
        class_name=section.string("class"),
        explicit=frozenset(key for key in ("format", "deterministic", "ttl") if section.has(key)),
    )
    if field_ref is None:
        return None
    if action is Action.TOKENIZE:
        _check_width(section, field_ref, token_format)
    return rule


def _token_format(section: Section, key: str, default: str) -> str:
    token_format = section.string(key, default) or default
    if token_format not in format_names():
        section.problem(
            key,
            f"unknown token format {token_format!r}",
            "use one of " + ", ".join(sorted(format_names())),
        )
        return default
    return token_format


def _check_width(section: Section, field_ref: FieldRef, token_format: str) -> None:
    """Report a fixed-width field or IPM element too narrow for the tokens of its format."""
    if field_ref.element is not None:
        digits, size, _ = ELEMENTS[field_ref.element]
        if token_format not in LENGTH_PRESERVING_FORMATS and (
            not digits or size < UUID_TOKEN_LENGTH
        ):
            section.problem(
                "format",
                f"data element {field_ref.element} holds at most {size} characters, too few for "
                f"{token_format} tokens of {UUID_TOKEN_LENGTH} characters",
                "use a length-preserving format: pan, pan_last4, numeric or alphanumeric",
            )
        return
    width = field_ref.width
    if width is None or token_format in LENGTH_PRESERVING_FORMATS:
        return
    if width < UUID_TOKEN_LENGTH:
        section.problem(
            "format",
            f"{field_ref} is {width} characters wide, too narrow for {token_format} tokens "
            f"of {UUID_TOKEN_LENGTH} characters",
            "use a length-preserving format: pan, pan_last4, numeric or alphanumeric",
        )


def _scan_rule(
    section: Section, input_format: InputFormat, record_types: set[str]
) -> ScanRule | None:
    section.check_keys((*_FIELD_KEYS, "detectors", "formats", "deterministic", "ttl"))
    if input_format is InputFormat.IPM:
        section.problem(None, "scan rules are not supported for ipm inputs", "use columns")
        return None
    field_ref = _field_ref(section, input_format, record_types)
    detectors = tuple(section.string_list("detectors", list(DETECTOR_NAMES)))
    for name in detectors:
        if name not in DETECTOR_NAMES:
            section.problem(
                "detectors", f"unknown detector {name!r}", "use " + ", ".join(DETECTOR_NAMES)
            )
            return None

    # Fixed-width fields keep their width, so detections there get length-preserving tokens.
    fixed = input_format is InputFormat.FIXED_WIDTH
    formats = {name: default_detection_format(name, fixed=fixed) for name in detectors}
    formats_section = section.section("formats")
    if formats_section is not None:
        formats_section.check_keys(detectors)
        for name in detectors:
            formats[name] = _token_format(formats_section, name, formats[name])
            if fixed and formats[name] not in LENGTH_PRESERVING_FORMATS:
                formats_section.problem(
                    name,
                    f"detections in fixed-width {field_ref} must keep their length",
                    "use pan, pan_last4, numeric or alphanumeric",
                )
    if field_ref is None:
        return None
    return ScanRule(
        field=field_ref,
        detectors=detectors,
        formats=formats,
        deterministic=section.boolean("deterministic", True),
        ttl=section.duration("ttl", None),
    )
