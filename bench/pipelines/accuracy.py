"""Precision and recall per entity type of vaultgate's detectors and of Presidio's pattern
recognizers, on the labelled PII sentences, in one run.

    python -m bench.pipelines.accuracy [--results bench/results/pipelines-accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.pipelines.presidio import presidio_engine, presidio_finder
from gateway.pipelines.detectors import detect
from tests.pipelines.labelled import load_sentences, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path)
    arguments = parser.parse_args()
    sentences = load_sentences()

    def ours(text: str) -> list[tuple[int, int, str]]:
        return [(found.start, found.end, found.detector) for found in detect(text)]

    started = time.perf_counter()
    vaultgate = score(ours, sentences)
    vaultgate_seconds = time.perf_counter() - started
    engine = presidio_engine()
    started = time.perf_counter()
    presidio = score(presidio_finder(engine), sentences)
    presidio_seconds = time.perf_counter() - started

    print(f"{'type':<8}{'labelled':>9}  {'vaultgate P':>11} {'R':>6}  {'Presidio P':>10} {'R':>6}")
    rows = []
    for name, result in vaultgate.items():
        other = presidio[name]
        print(
            f"{name:<8}{result.labelled:>9}  {result.precision:>11.3f} {result.recall:>6.3f}  "
            f"{other.precision:>10.3f} {other.recall:>6.3f}"
        )
        rows.append(
            {
                "type": name,
                "labelled": result.labelled,
                "vaultgate": {
                    "precision": result.precision,
                    "recall": result.recall,
                    "detected": result.detected,
                },
                "presidio": {
                    "precision": other.precision,
                    "recall": other.recall,
                    "detected": other.detected,
                },
            }
        )
    print(
        f"seconds for {len(sentences)} sentences: vaultgate {vaultgate_seconds:.2f}, "
        f"Presidio {presidio_seconds:.2f}"
    )
    if arguments.results:
        arguments.results.parent.mkdir(parents=True, exist_ok=True)
        arguments.results.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
