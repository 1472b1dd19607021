"""Benchmark: `tag` on mp3, flac, ogg and wav copies of real clips: the dry run, --write, a kill during --write, undo.

Copies the test tracks of fold 0 of gtzan_mini (../shared/data, 20 real 30 s clips) into a folder in each of the four
formats (soundfile: mp3, Vorbis ogg, 16-bit wav, the FLAC as it is), gives every other file an existing genre
("Unsorted"), and tags the folder with a musicnn probe of that fold (bench/unknown.py's, trained on the other folds'
tracks when missing), each command in a process of its own:

1. the dry run: it must change no byte of any file (SHA-256 before and after);
2. `--write --overwrite --log LOG`: killed (SIGKILL, the process group) once a third of the files planned for
   writing are in the log, then the same command again: every file must decode to the samples it had before
   (`tagging.samples`), carry one genre value, and be written once (one log row per file);
3. `--undo LOG`: every file's genre must be its old value again ("Unsorted", or none).

It prints what each step found and the files per second of each command, and records a row in
bench/results/tag_formats.csv and .md.

    .venv/bin/python bench/tag_formats.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import result_table  # noqa: E402
from library import REPO, child_env  # noqa: E402
from unknown import MODEL, train_run  # noqa: E402

FORMATS = {".flac": None, ".mp3": {"format": "MP3"}, ".ogg": {"format": "OGG", "subtype": "VORBIS"},
           ".wav": {"format": "WAV", "subtype": "PCM_16"}}  # fmt: skip
OLD_GENRE = "Unsorted"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copies(clips: list[Path], folder: Path) -> list[Path]:
    """Each clip in each format, every other file given the genre OLD_GENRE first."""
    from genre_tf.serving.tagging import write_fields

    paths = []
    for clip in clips:
        for suffix, options in FORMATS.items():
            # Not GTZAN's name: predict keeps a GTZAN id as the track's, and the four copies would share it.
            path = folder / suffix[1:] / f"{clip.stem.replace('.', ' ')} {suffix[1:]}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if options is None:
                shutil.copyfile(clip, path)  # writable, as a library is (the shared clips are read-only)
            else:
                y, sr = sf.read(clip, dtype="float32")
                sf.write(path, y, sr, **options)
            if len(paths) % 2 == 0:
                write_fields(path, {"genre": OLD_GENRE})
            paths.append(path)
    return paths


def tag(args: list[str], log: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "genre_tf.tag", *args], cwd=REPO, env=child_env(), stdout=out,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    return done, time.perf_counter() - started


def log_rows(log: Path, field: str = "genre") -> int:
    """The log's rows that change `field` (one per file written)."""
    if not log.is_file():
        return 0
    with open(log, newline="") as f:
        return sum(1 for row in csv.DictReader(f) if row.get("field") == field)


def killed_write(args: list[str], log: Path, at_rows: int, out: Path) -> tuple[int, float]:
    """`tag ARGS` killed once the log has `at_rows` genre rows; (rows at the kill, seconds)."""
    started = time.perf_counter()
    with open(out, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "genre_tf.tag", *args], cwd=REPO, env=child_env(),
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        while process.poll() is None and log_rows(log) < at_rows:
            time.sleep(0.02)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return log_rows(log), time.perf_counter() - started


def main() -> None:
    from genre_tf.data.index import index_folder
    from genre_tf.inputs.examples import load_examples
    from genre_tf.serving.tagging import read_field, samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the copies, plan and log go (kept); default: temporary")
    args = parser.parse_args()
    shared = REPO.parent / "shared" / "data" / "gtzan_mini"
    if not shared.is_dir():
        raise SystemExit(f"error: no clips at {shared} (../shared/data absent)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tag-formats-"))
    shutil.rmtree(work / "music", ignore_errors=True)
    for leftover in ("tags.log.csv", "tags.plan.csv"):
        (work / leftover).unlink(missing_ok=True)
    run = train_run(f"{MODEL}_fold0", ["data.fold=0"])
    test = load_examples(run.config, progress=False).split("test").drop_duplicates("track_id")
    paths = index_folder(shared).tracks.set_index("track_id").path
    files = copies([Path(paths[t]) for t in test.track_id], work / "music")
    n = len(files)
    log, plan = work / "tags.log.csv", work / "tags.plan.csv"
    common = ["--run", str(run.path), str(work / "music"), "--log", str(log), "--plan", str(plan), "--overwrite"]

    before = {p: digest(p) for p in files}
    audio = {p: samples(p) for p in files}
    old = {p: read_field(p, "genre") for p in files}
    dry, dry_s = tag(common, work / "dry.out")
    if dry.returncode != 0:
        raise SystemExit(f"error: the dry run failed; see {work / 'dry.out'}")
    unchanged = sum(digest(p) == before[p] for p in files)
    with open(plan, newline="") as f:
        planned = sum(1 for row in csv.DictReader(f) if row["action"] == "write")
    print(f"{n} files ({n // len(FORMATS)} clips x {', '.join(FORMATS)}); dry run {dry_s:.1f} s: {planned} to write, "
          f"{unchanged} of {n} files unchanged byte for byte")  # fmt: skip

    at_rows, killed_s = killed_write([*common, "--write"], log, max(1, planned // 3), work / "killed.out")
    half_made = len(list((work / "music").rglob(".*genre_tf-tmp*")))
    print(f"--write killed after {killed_s:.1f} s with {at_rows} genres in the log, {half_made} half-made copies")
    again, write_s = tag([*common, "--write"], work / "write.out")
    if again.returncode != 0:
        raise SystemExit(f"error: the write after the kill failed; see {work / 'write.out'}")
    same_audio = sum(np.array_equal(samples(p), audio[p]) for p in files)
    genres = {p: read_field(p, "genre") for p in files}
    written = [p for p in files if genres[p] != old[p]]
    one_value = sum("; " not in genres[p] for p in files)
    rows = log_rows(log)
    left_copies = len(list((work / "music").rglob(".*genre_tf-tmp*")))
    print(f"the same command again, {write_s:.1f} s: {len(written)} files with a new genre, {rows} genre rows in the "
          f"log; {same_audio} of {n} decode to their samples before; {one_value} of {n} hold one genre value; "
          f"{left_copies} half-made copies left")  # fmt: skip
    by_format = {s: sum(p.suffix == s for p in written) for s in FORMATS}
    print("  written per format: " + ", ".join(f"{s[1:]} {k}" for s, k in by_format.items()))

    undone, undo_s = tag(["--undo", str(log)], work / "undo.out")
    if undone.returncode != 0:
        raise SystemExit(f"error: undo failed; see {work / 'undo.out'}")
    restored = sum(read_field(p, "genre") == old[p] for p in files)
    same_after_undo = sum(np.array_equal(samples(p), audio[p]) for p in files)
    print(f"--undo {undo_s:.1f} s: {restored} of {n} files hold their old genre again; {same_after_undo} of {n} "
          f"decode to their first samples")  # fmt: skip

    row = {
        "run": run.path.name,
        "files": n,
        "formats": " ".join(s[1:] for s in FORMATS),
        "dry run s": round(dry_s, 1),
        "dry run: files unchanged": f"{unchanged} of {n}",
        "planned to write": planned,
        "killed at log rows": at_rows,
        "again s": round(write_s, 1),
        "written": len(written),
        "written per format": " ".join(f"{s[1:]} {k}" for s, k in by_format.items()),
        "genre rows in the log": rows,
        "same samples": f"{same_audio} of {n}",
        "one genre value": f"{one_value} of {n}",
        "half-made copies left": left_copies,
        "undo s": round(undo_s, 1),
        "old genre back": f"{restored} of {n}",
        "load average": round(os.getloadavg()[0], 1),
    }
    result_table.record("tag_formats", [row], key=["run"])


if __name__ == "__main__":
    main()
