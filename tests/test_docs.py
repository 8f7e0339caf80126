"""The docs show figures only as rendered from the results files (scripts/render_tables.py)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_rendered_tables_match_the_results_files():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "render_tables.py"), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_readme_is_short_and_links_only_existing_docs():
    import re

    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target
