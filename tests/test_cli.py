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
