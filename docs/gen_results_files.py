"""The pictures of bench/results/ (cv.png) put into the site under results/, for the Results page.

Run by the mkdocs-gen-files plugin (mkdocs.yml). The tables of bench/results/ need no copy: the pages include them
with pymdownx.snippets, whose base path is bench/results.
"""

from pathlib import Path

import mkdocs_gen_files

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"

for picture in sorted(RESULTS.glob("*.png")):
    with mkdocs_gen_files.open(f"results/{picture.name}", "wb") as out:
        out.write(picture.read_bytes())
