"""genre-tf COMMAND [ARGUMENTS]: every command from one console script, the same as `python -m genre_tf.COMMAND`."""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("prepare", "train", "tune", "evaluate", "ensemble", "predict", "tag", "compare", "export", "serve")


def command_line(name: str) -> str:
    """A command's one-line description: the first line of its module's docstring."""
    return importlib.import_module(f"genre_tf.{name}").__doc__.splitlines()[0]


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command_line(name)}" for name in COMMANDS]
    return "\n".join(["usage: genre-tf COMMAND [ARGUMENTS]   (genre-tf COMMAND --help for its arguments)", "", *lines])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, arguments = argv[0], argv[1:]
    if name not in COMMANDS:
        raise SystemExit(f"error: unknown command {name!r}; one of {', '.join(COMMANDS)} (genre-tf --help)")
    importlib.import_module(f"genre_tf.{name}").main(arguments)


if __name__ == "__main__":
    main()
