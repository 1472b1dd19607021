"""A benchmark's figures, kept as bench/results/<name>.csv and shown as <name>.md, which the docs include.

Each row is one measurement as the script rounded it, stamped with when, on what commit and under what load average
it was measured, and the command that measured it. A new measurement replaces the rows it shares its key columns
with (its parameters: the run, the number of clips, ...) where they stood, and keeps the others: bench/serve.py on
musicnn keeps the demo CNN's row. The markdown shows the figures as written, with the commands and commits below the
table.

    .venv/bin/python bench/result_table.py NAME ...   # rewrite NAME.md from NAME.csv, after editing the CSV
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STAMP = ["measured", "command"]


def measured_at() -> str:
    """Today's date, the checkout's commit (`-dirty` where it has changes) and the load average as the measurement
    ends (over 1, 5 and 15 minutes: the cores are shared, and other work inflates seconds)."""
    try:
        describe = ["git", "describe", "--always", "--dirty"]
        commit = subprocess.run(describe, cwd=RESULTS.parent, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "outside git"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{datetime.date.today().isoformat()} at commit {commit}, load average {load} at the end"


def command_line() -> str:
    """The command that runs this benchmark again, as the docs show it."""
    return shlex.join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def cell(value) -> str:
    """A figure as text: as the script rounded it, no trailing `.0`, empty where there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e6 else f"{value:.6g}"
    return str(value)


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def merged(old: list[dict], new: list[dict], key: list[str]) -> list[dict]:
    """The old rows with those of the new measurement's keys replaced by the new rows, in their place."""
    keys = {tuple(row.get(k, "") for k in key) for row in new}
    rows, placed = [], False
    for row in old:
        if tuple(row.get(k, "") for k in key) in keys:
            if not placed:
                rows += new
                placed = True
        else:
            rows.append(row)
    return rows if placed else rows + new


def columns(rows: list[dict]) -> list[str]:
    """Every column some row fills, in first-seen order, the stamp last."""
    seen = dict.fromkeys(k for row in rows for k in row if k not in STAMP)
    return [*(k for k in seen if any(row.get(k, "") != "" for row in rows)), *STAMP]


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table, each distinct (measured, command) named below it."""
    shown = columns(rows)[: -len(STAMP)]
    stamps = list(dict.fromkeys((row.get("measured", ""), row.get("command", "")) for row in rows))
    if len(stamps) > 1:
        shown.append("measured")
    lines = ["| " + " | ".join(shown) + " |", "|---" * len(shown) + "|"]
    for row in rows:
        values = [row.get(k, "") for k in shown]
        if len(stamps) > 1:
            values[-1] = f"[{stamps.index((row.get('measured', ''), row.get('command', ''))) + 1}]"
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    lines.append("")
    for i, (when, command) in enumerate(stamps, 1):
        lines.append(f"{f'[{i}] ' if len(stamps) > 1 else ''}Measured {when} with `{command}`  ")
    return "\n".join(lines).rstrip() + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write(name: str, rows: list[dict]) -> None:
    """bench/results/<name>.csv and <name>.md from the rows."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / f"{name}.csv", out.getvalue())
    write_atomic(RESULTS / f"{name}.md", markdown(rows))


def record(name: str, rows: list[dict], key: list[str]) -> None:
    """Put a measurement's rows into bench/results/<name>.csv and .md, replacing the rows of the same key."""
    stamp = {"measured": measured_at(), "command": command_line()}
    new = [{k: cell(v) for k, v in row.items()} | stamp for row in rows]
    write(name, merged(read(RESULTS / f"{name}.csv"), new, key))
    print(f"(written to bench/results/{name}.csv and .md)")


def main() -> None:
    names = sys.argv[1:]
    if not names:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    for name in names:
        rows = read(RESULTS / f"{Path(name).stem}.csv")
        if not rows:
            raise SystemExit(f"error: no rows in bench/results/{Path(name).stem}.csv")
        write(Path(name).stem, rows)


if __name__ == "__main__":
    main()
