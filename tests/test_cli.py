"""Tests for genre_tf.cli: the `genre-tf` console script and every command's --help."""

import subprocess
import sys

import pytest

from genre_tf.cli import COMMANDS, main


def test_usage_lists_every_command_with_its_line(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "Train a model from a config into a run directory" in out


def test_an_unknown_command_is_one_line():
    with pytest.raises(SystemExit, match=r"^error: unknown command 'trian'; one of prepare, train,"):
        main(["trian"])


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_answers_help(name):
    """Through `python -m genre_tf COMMAND --help`, which runs the console script's code: exit 0, its usage."""
    proc = subprocess.run(
        [sys.executable, "-m", "genre_tf", name, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m genre_tf.{name}")


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "serve"])
def test_a_run_folder_that_is_not_a_run_is_one_rule_in_every_command(command, tmp_path, monkeypatch):
    """No folder: `no such run directory`; a folder without model.keras: `not a finished run directory`."""
    import importlib

    module = importlib.import_module(f"genre_tf.{command}")
    extra = {"predict": [str(tmp_path)], "export": ["--format", "saved_model"]}.get(command, [])
    (tmp_path / "half").mkdir()
    for run, message in [
        (tmp_path / "nowhere", f"error: no such run directory: {tmp_path / 'nowhere'}"),
        (tmp_path / "half", f"error: {tmp_path / 'half'} has no model.keras (not a finished run directory)"),
    ]:
        with pytest.raises(SystemExit) as stop:
            module.main(["--run", str(run), *extra])
        assert stop.value.code == message


def test_compare_writes_beside_the_runs_wherever_it_runs(tmp_path, monkeypatch, make_table_run, write_feature_table):
    import shutil

    from genre_tf import compare
    from genre_tf.evaluation.report import evaluate_run
    from genre_tf.run import RunDir

    run = make_table_run(tmp_path / "made" / "mlp", write_feature_table(tmp_path / "table.csv", ["a", "b", "c"]))
    evaluate_run(RunDir(run), ["valid"])  # a finished run: its metrics.json
    runs = tmp_path / "some" / "runs"
    shutil.copytree(run, runs / "mlp")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    compare.main([str(runs / "mlp")])
    assert sorted(p.name for p in runs.glob("comparison.*")) == ["comparison.csv", "comparison.md", "comparison.png"]
    assert not any(elsewhere.iterdir())
