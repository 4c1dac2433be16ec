"""Pick the file format object for a spec."""

from __future__ import annotations

from gateway.pipelines.csvfile import CsvFormat
from gateway.pipelines.fileformat import FileFormat
from gateway.pipelines.fixedwidth import FixedWidthFormat
from gateway.pipelines.ipm import IpmFormat
from gateway.pipelines.jsonlines import JsonLinesFormat
from gateway.pipelines.spec import InputFormat, PipelineSpec


def make_format(spec: PipelineSpec) -> FileFormat:
    """Return a new, unopened format object for the spec's input format."""
    if spec.format is InputFormat.CSV:
        return CsvFormat(spec.csv)
    if spec.format is InputFormat.JSONL:
        return JsonLinesFormat()
    if spec.format is InputFormat.FIXED_WIDTH:
        assert spec.fixed_width is not None, "load_spec requires the fixed_width section"
        return FixedWidthFormat(spec.fixed_width)
    return IpmFormat(spec.ipm)
