"""A griffe extension for the API reference: the commands' usage lines shown as code.

A command module's docstring opens with its usage (`python -m genre_tf.prepare --config C [--jobs N]`). Read as
Markdown, such a line is prose, and `[--jobs N] [--output DIR]` even reads as a reference link, which a strict
build reports as a cross-reference it cannot find. Each run of usage lines at the start of a docstring line, with
the indented lines that continue it, becomes an indented code block. Loaded by mkdocstrings (mkdocs.yml).
"""

import re

import griffe

USAGE = re.compile(r"(python3?|\.venv/bin/python|genre-tf) ")


def usage_as_code(text: str) -> str:
    """The docstring with its usage lines indented into code blocks, set apart by blank lines."""
    lines, in_usage = [], False
    for line in text.splitlines():
        if USAGE.match(line) or (in_usage and line.startswith(" ") and line.strip()):
            if not in_usage and lines and lines[-1].strip():
                lines.append("")
            lines.append(f"    {line}")
            in_usage = True
            continue
        if in_usage and line.strip():
            lines.append("")
        lines.append(line)
        in_usage = False
    return "\n".join(lines)


class UsageLinesAsCode(griffe.Extension):
    """Rewrites each module docstring's usage lines as code, once the object tree is loaded."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs) -> None:
        if obj.is_module and obj.docstring is not None:
            obj.docstring.value = usage_as_code(obj.docstring.value)
