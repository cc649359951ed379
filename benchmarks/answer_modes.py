"""The answer-mode choice replayed on a frontier benchmark's cached runs: chosen on val, read on test.

`dalip train` ends a DALIP run with `data.val` and `data.val_general` by choosing the similarity
the model answers with (`dalip.evaluation.validation.choose_answer_mode`: the higher mean of the
two zero-shot top-1 accuracies, fused or first). Runs that stored no choice (those of frontier.py
before dalip 0.5) get the same choice here, on the same val splits of the benchmark's data;
the test sweeps already scored every mode, so the chosen mode's test accuracy is read from them
and paired with CLIP tuning and with each fixed mode, seed by seed.

    python benchmarks/answer_modes.py --frontier bench-frontier --recipes dalip,l2sp-dalip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Summary, format_table, machine, record_section, run_header  # noqa: E402

from dalip.evaluation.validation import choose_answer_mode  # noqa: E402
from dalip.frontier.curves import paired_interval  # noqa: E402
from dalip.inference.runtime import Runtime  # noqa: E402
from dalip.inference.specs import load_model  # noqa: E402

MODES = ("fused", "first", "second")


def chosen_mode(run: Path, data: Path) -> dict[str, Any]:
    """The mode a DALIP run answers with: its stored one, else the choice `dalip train` makes."""
    loaded = load_model(str(run / "model.safetensors"))
    if loaded.model.answer_mode is not None:
        return {"chosen": loaded.model.answer_mode, "by": "stored"}
    folders = {
        "domain": (str(data / "plant/val"), "plant"),
        "general": (str(data / "general/val"), "generic"),
    }
    return choose_answer_mode(loaded.model, loaded.tokenizer, loaded.preprocess, folders, Runtime(64))


def tuned_scores(sweep: Path) -> dict[str, tuple[float, float]]:
    """{mode: (plant, general)} test top-1 of the tuned model (w = 1) of a sweep."""
    results = json.loads((sweep / "results.json").read_text())
    (point,) = [p for p in results["interpolation"] if p["weight"] == 1.0]
    return {mode: (s["domains"]["plant"], s["domains"]["general"]) for mode, s in point["summary"].items()}


def _text(summary: dict[str, Any]) -> str:
    if summary["low"] is None:
        return f"{100 * summary['mean']:+.1f}"
    return f"{100 * summary['mean']:+.1f} [{100 * summary['low']:+.1f}, {100 * summary['high']:+.1f}]"


HEADER = ["recipe (mode)", "seeds", "plant - CLIP", "general - CLIP", "plant - fused", "general - fused"]


def readings(frontier: Path, recipes: list[str], seeds: list[int]) -> tuple[str, dict[str, Any]]:
    """The Markdown table and the per-seed choices."""
    rows, choices = reading_rows(frontier, recipes, seeds)
    return format_table(HEADER, rows), choices


def summary(rows: list[list[Any]]) -> Summary:
    """RESULTS.md's row: each recipe answering in its own mode (chosen on val), against CLIP."""
    return Summary(
        "test top-1 of DALIP-tuned models answering in the mode chosen on val (own), paired with CLIP tuning",
        "; ".join(
            f"{row[0]}: plant - CLIP {row[2]}, general - CLIP {row[3]}" for row in rows if "(own)" in row[0]
        ),
        "none (paired by seed, mean [95% t interval], points)",
    )


def reading_rows(
    frontier: Path, recipes: list[str], seeds: list[int]
) -> tuple[list[list[Any]], dict[str, Any]]:
    """The table's rows (HEADER's columns) and the per-seed choices."""
    sweeps = frontier / "frontier-test" / "sweeps"
    choices: dict[str, Any] = {}
    rows = []
    for recipe in recipes:
        per_seed = []
        for seed in seeds:
            choice = chosen_mode(frontier / "runs" / f"{recipe}@{seed}", frontier / "data")
            choices[f"{recipe}@{seed}"] = choice
            ours, clip = tuned_scores(sweeps / f"{recipe}@{seed}"), tuned_scores(sweeps / f"clip@{seed}")
            per_seed.append((choice["chosen"], ours, clip["first"]))
        for mode in (*MODES, "own"):
            pick = [(own if mode == "own" else mode, ours, clip) for own, ours, clip in per_seed]
            cells = [
                _text(paired_interval([ours[m][index] - clip[index] for m, ours, clip in pick]))
                for index in (0, 1)
            ]
            cells += [
                _text(paired_interval([ours[m][index] - ours["fused"][index] for m, ours, _ in pick]))
                for index in (0, 1)
            ]
            rows.append([f"{recipe} ({mode})", len(pick), *cells])
    return rows, choices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frontier", required=True, help="a frontier.py --out folder (test split)")
    parser.add_argument("--recipes", default="dalip,l2sp-dalip", help="DALIP recipes (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="paired seeds (default %(default)s)")
    parser.add_argument("--title", default="", help="added to the RESULTS.md section's title")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows, choices = reading_rows(Path(args.frontier), args.recipes.split(","), seeds)
    table = format_table(HEADER, rows)
    chosen = ", ".join(f"{run}: {choice['chosen']}" for run, choice in choices.items())
    body = (
        "Test top-1 of the tuned models (w = 1), each DALIP recipe read in each mode and in its own "
        "(own: chosen on the val splits as `dalip train` chooses), paired by seed with CLIP tuning "
        "(first order) and with the same weights answering fused; mean [95% t interval], points.\n\n"
        f"{table}\n\nChosen per run: {chosen}.\n"
    )
    print(body)
    if not args.no_record:
        header = run_header("answer_modes.py", argv if argv is not None else sys.argv[1:], machine("cpu"))
        title = f"Answer mode chosen on val, read on test{args.title}"
        record_section(title, header + "\n\n" + body, summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
