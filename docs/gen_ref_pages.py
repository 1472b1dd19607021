"""The API reference: a page per module of the genre_tf package, found by walking it at build time.

Run by the mkdocs-gen-files plugin (mkdocs.yml). Each page holds one `::: module` directive that mkdocstrings fills
from the module's docstrings by reading the source (griffe), so nothing is imported. `reference/SUMMARY.md` is the
section's navigation, read by mkdocs-literate-nav. `__main__` and private modules (`_name.py`) are left out.
"""

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "genre_tf"

nav = mkdocs_gen_files.Nav()
for path in sorted(PACKAGE.rglob("*.py")):
    module = path.relative_to(ROOT).with_suffix("")
    parts = module.parts
    if parts[-1] == "__main__" or any(part.startswith("_") and part != "__init__" for part in parts):
        continue
    page = module.with_suffix(".md")
    if parts[-1] == "__init__":
        parts = parts[:-1]
        page = page.with_name("index.md")
    nav[parts] = page.as_posix()
    with mkdocs_gen_files.open(Path("reference", page), "w") as out:
        out.write(f"::: {'.'.join(parts)}\n")
    mkdocs_gen_files.set_edit_path(Path("reference", page), path.relative_to(ROOT))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as out:
    out.writelines(nav.build_literate_nav())
