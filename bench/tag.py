"""Benchmark: `tag` on a library of N distinct 30 s clips, against `predict` on the same files in the same run.

Writes the library as bench/library.py does (the demo styles, one generator per clip, FLAC), then runs, one after
another, each in its own process:

    python -m genre_tf.predict --run RUN FOLDER --output OUT          # the floor: what predicting them costs
    python -m genre_tf.tag --run RUN FOLDER                            # the dry run: predict + the plan
    python -m genre_tf.tag --run RUN FOLDER --write --log LOG          # predict + write (copy, verify, rename)
    python -m genre_tf.tag --undo LOG                                  # every old value back

and prints each one's wall seconds and files/s, the write's cost over predict's, and checks with mutagen that the
written files hold the genre and that undo left none. A run without calibration.json is evaluated on valid first
(`tag` reads its valid confidences).

    .venv/bin/python bench/tag.py [--tracks 1000] [--run saved_models/demo_cnn] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from library import REPO, child_env, workdir_and_run, write_library  # bench/library.py, beside this script
from result_table import record

from genre_tf.serving.tagging import read_field


def timed(command: list[str], log: Path) -> tuple[float, str]:
    """(wall seconds, stdout) of a command run to its end; SystemExit when it fails."""
    started = time.perf_counter()
    with open(log, "w") as stderr:
        done = subprocess.run(command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=stderr, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[1:4])} exited with {done.returncode}; see {log}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1000, help="clips in the library")
    parser.add_argument("--run", type=Path, help="a finished run (default: saved_models/demo_cnn, trained if missing)")
    parser.add_argument("--workdir", type=Path, help="library and outputs (kept); default: a temporary folder")
    args = parser.parse_args()
    work, run = workdir_and_run(args.workdir, args.run, "tag-bench-")
    if not (run / "calibration.json").is_file():
        print(f"evaluating {run} on valid first: tag picks its threshold from the valid confidences", flush=True)
        timed([sys.executable, "-m", "genre_tf.evaluate", "--run", str(run), "--split", "valid"], work / "eval.log")
    folder = work / "library"
    shutil.rmtree(folder, ignore_errors=True)  # untagged, as written
    write_library(folder, args.tracks, 30.0)
    files = sorted(folder.rglob("*.flac"))
    load = os.getloadavg()[0]
    py, log = sys.executable, work / "tags.log.csv"
    log.unlink(missing_ok=True)
    steps = {
        "predict": [py, "-m", "genre_tf.predict", "--run", str(run), str(folder), "--output", str(work / "out.csv"),
                    "--overwrite"],
        "tag (dry run)": [py, "-m", "genre_tf.tag", "--run", str(run), str(folder), "--plan", str(work / "plan.csv")],
        "tag --write": [py, "-m", "genre_tf.tag", "--run", str(run), str(folder), "--write", "--log", str(log),
                        "--plan", str(work / "plan.csv")],
        "tag --undo": [py, "-m", "genre_tf.tag", "--undo", str(log)],
    }  # fmt: skip
    seconds, said = {}, {}
    for name, command in steps.items():
        seconds[name], said[name] = timed(command, work / f"{name.split()[-1].strip('-()')}.log")
        last = said[name].strip().splitlines()[-1] if said[name].strip() else ""
        print(f"{name}: {seconds[name]:.1f} s, {len(files) / seconds[name]:.2f} files/s; {last[:150]}", flush=True)
        if name == "tag --write":
            tagged = sum(read_field(p, "genre") != "" for p in files)
            print(f"  {tagged} of {len(files)} files hold a genre", flush=True)
        if name == "tag --undo":
            left = sum(read_field(p, "genre") != "" for p in files)
            print(f"  after undo, {left} files hold a genre", flush=True)
    row = {
        "tracks": len(files),
        "run": run.name,
        **{f"{name} s": round(s, 1) for name, s in seconds.items()},
        "files tagged": tagged,
        "genres left after undo": left,
        "write / predict": round(seconds["tag --write"] / seconds["predict"], 2),
        "load average at start": round(load, 1),
    }
    print(row)
    record("tag", [row], key=["tracks", "run"])


if __name__ == "__main__":
    main()
