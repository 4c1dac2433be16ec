"""Build a CSV in the shape of the Synthea patients file, of a given size, with varied rows.

Every row has a unique Id and its own SSN, driver's licence and passport numbers. Names,
streets, cities and birthplaces are drawn from the shared Synthea file with new numeric
suffixes, house numbers and dates, so few values repeat. The generator is seeded, so the same
size gives the same file.

    python -m bench.pipelines.generate OUTPUT.csv --size 1GB
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

from gateway.config.fields import parse_size

SOURCE = Path(__file__).resolve().parents[2] / "tests" / "data" / "synthea_us_patients.csv"


def _pools() -> dict[str, list[str]]:
    with SOURCE.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    strip = re.compile(r"[0-9]+$")
    pools = {
        "names": sorted(
            {strip.sub("", row["FIRST"]) for row in rows}
            | {strip.sub("", row["LAST"]) for row in rows}
        ),
        "streets": sorted({" ".join(row["ADDRESS"].split()[1:3]) for row in rows}),
        "places": sorted(
            {(row["CITY"], row["STATE"], row["COUNTY"], row["FIPS"], row["ZIP"]) for row in rows}
        ),  # type: ignore[misc]
        "birthplaces": sorted({row["BIRTHPLACE"] for row in rows}),
    }
    return pools  # type: ignore[return-value]


def _prefix(adult: bool, married: bool, gender: str) -> str:
    if not adult:
        return ""
    if gender == "M":
        return "Mr."
    return "Mrs." if married else "Ms."


def _marital(adult: bool, married: bool) -> str:
    if married:
        return "M"
    return "S" if adult else ""


def generate(path: Path, size: int, seed: int = 1) -> int:
    """Write rows until the file reaches ``size`` bytes; return the number of rows."""
    rng = random.Random(seed)
    pools = _pools()
    names, streets, places, birthplaces = (
        pools["names"],
        pools["streets"],
        pools["places"],
        pools["birthplaces"],
    )
    with SOURCE.open(encoding="utf-8") as handle:
        header = handle.readline()
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(header)
        written = len(header)
        while written < size:
            lines = []
            for _ in range(1000):
                bits = rng.getrandbits(128)
                hex_id = f"{bits:032x}"
                identifier = (
                    f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
                )
                year = rng.randint(1920, 2023)
                birth = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                adult = year < 2006
                gender = rng.choice("FM")
                city, state, county, fips, zip_code = rng.choice(places)  # type: ignore[misc]
                married = adult and rng.random() < 0.5
                line = ",".join(
                    [
                        identifier,
                        birth,
                        "",
                        f"999-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
                        f"S999{rng.randint(10000, 99999)}" if adult else "",
                        f"X{rng.randint(10000000, 99999999)}X" if adult else "",
                        _prefix(adult, married, gender),
                        f"{rng.choice(names)}{rng.randint(1, 999)}",
                        f"{rng.choice(names)}{rng.randint(1, 999)}",
                        "",
                        f"{rng.choice(names)}{rng.randint(1, 999)}"
                        if married and gender == "F"
                        else "",
                        _marital(adult, married),
                        rng.choice(("white", "black", "asian", "native", "other")),
                        rng.choice(("nonhispanic", "hispanic")),
                        gender,
                        rng.choice(birthplaces),
                        f"{rng.randint(1, 9999)} {rng.choice(streets)}"
                        + (f" Unit {rng.randint(1, 99)}" if rng.random() < 0.2 else ""),
                        city,
                        state,
                        county,
                        fips,
                        zip_code,
                        f"{rng.uniform(40.0, 43.0):.14f}",
                        f"{rng.uniform(-104.0, -95.3):.14f}",
                        f"{rng.uniform(0, 900000):.2f}",
                        f"{rng.uniform(0, 90000):.2f}",
                        str(rng.randint(10000, 200000)),
                    ]
                )
                lines.append(line)
            block = "\n".join(lines) + "\n"
            out.write(block)
            written += len(block)
            rows += len(lines)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", default="1GB", help="file size such as 1GB or 100MB")
    arguments = parser.parse_args()
    rows = generate(arguments.output, parse_size(arguments.size))
    print(f"{arguments.output}: {rows} rows, {arguments.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
