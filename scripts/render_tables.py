"""Render the tables the docs show from the results files that hold the numbers, so no figure is copied by
hand: ``python scripts/render_tables.py`` writes ``docs/generated/*.md`` (included by the pages through
``--8<--``); ``--check`` exits 1 when a generated file differs from what the results files give now
(tests run it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "generated"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _setting(s: dict) -> str:
    if s.get("order") == "raster":
        return f"raster order, {len(s['step_schedule'])} steps of one token"
    att = "causal attention" if s.get("attention") == "causal" else "random order"
    return f"{att}, {s['steps']} steps"


def demo_quality() -> str:
    d = json.loads((REPO / "benchmarks" / "results" / "demo_quality.json").read_text())
    r = d["recipe"]
    rows = [f"| sampler (1000 samples, cfg {r['cfg_scale']:g} {r['cfg_schedule']}, temperature {r['temperature']:g}) "
            "| class accuracy | classifier Frechet | img/s (codes only) |", "|---|---|---|---|"]
    for g in d["generation"]:
        name = _setting(g["setting"])
        if g["setting"].get("steps") == r["steps"] and "attention" not in g["setting"]:
            name += " (the demo recipe)"
        rows.append(f"| {name} | {_pct(g['accuracy'])} | {g['frechet']:.1f} | {g['img_per_s']:.0f} |")
    t = d["tokenizer_reconstructions"]
    rows.append(f"| tokenizer reconstructions of held-out images (ceiling) | {_pct(t['accuracy'])} | {t['frechet']:.2f} | |")
    rows.append(f"| real held-out images | {_pct(d['classifier_heldout_accuracy'])} | "
                f"{d['frechet_floor_train_vs_heldout']:.2f} (floor) | |")
    return "\n".join(rows) + "\n"


TABLES = {"demo_quality.md": demo_quality}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    a = p.parse_args()
    stale = []
    for name, render in TABLES.items():
        text, path = render(), OUT / name
        if a.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python scripts/render_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
