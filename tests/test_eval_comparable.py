"""Evaluation that compares with published numbers and does not depend on row order:
open_clip's template sets, retrieval with duplicate captions, honest domain labels."""

from __future__ import annotations

import json

import pytest
import torch
from data_fixtures import write_csv
from eval_fixtures import StubModel, loaded_stub, make_workspace, unit, write_image

from dalip.cli import main
from dalip.evaluation import retrieval
from dalip.evaluation.suite_file import load_suite
from dalip.inference.templates import builtin_template_sets, load_templates

# Images 0 and 1 share the caption "oak leaf": image 1 is near the oak axis, so both copies
# of that caption tie for its top 1; image 0 is nearer maple (a miss either way).
TEXTS = ["oak leaf", "fern", "maple"]
IMAGES = [[0.5, 0, 1], [1, 0.1, 0], [0, 1, 0], [0, 0, 1]]
CAPTIONS = [(0, "oak leaf"), (1, "oak leaf"), (2, "fern"), (3, "maple")]


def test_open_clip_template_sets_are_built_in():
    assert {"openai", "simple", "generic", "plant", "none"} <= set(builtin_template_sets())
    openai, simple = load_templates("openai"), load_templates("simple")
    assert len(openai) == 80 and len(simple) == 7
    assert openai[0] == "a bad photo of a {}." and all("{}" in t for t in openai + simple)


def test_tied_captions_count_for_every_image_that_has_them():
    scores = unit(IMAGES) @ torch.eye(3)[[0, 0, 1, 2]].T  # (4 images, 4 texts)
    owner = torch.tensor([0, 1, 2, 3])
    swapped = [1, 0, 2, 3]  # the two "oak leaf" rows exchanged
    captions = [caption for _, caption in CAPTIONS]
    positives = retrieval.caption_positives(captions, owner, 4)
    assert positives[:, 0].tolist() == [True, True, False, False]
    by_identity = retrieval.retrieval_metrics(scores, owner, (1,), positives)
    assert by_identity["image_to_text_R@1"] == 0.75 and by_identity["text_to_image_R@1"] == 1.0
    swapped_positives = retrieval.caption_positives([captions[i] for i in swapped], owner[swapped], 4)
    assert (
        retrieval.retrieval_metrics(scores[:, swapped], owner[swapped], (1,), swapped_positives)
        == by_identity
    )
    # counting the owner only, the same scores give a result that depends on the row order
    owner_only = retrieval.retrieval_metrics(scores, owner, (1,))
    assert owner_only != retrieval.retrieval_metrics(scores[:, swapped], owner[swapped], (1,))


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [1, 0, 3, 2]])
def test_retrieval_on_a_csv_does_not_depend_on_row_order(tmp_path, order):
    for image_id in range(4):
        write_image(tmp_path / f"{image_id}.png", image_id)
    rows = [{"filepath": f"{CAPTIONS[i][0]}.png", "caption": CAPTIONS[i][1]} for i in order]
    csv_path = write_csv(tmp_path / "captions.csv", rows)
    eye = torch.eye(3).tolist()
    loaded = loaded_stub(StubModel(IMAGES, IMAGES, eye, eye), TEXTS)
    result = retrieval.retrieval(loaded.model, csv_path, loaded.tokenizer, loaded.preprocess, modes=["first"])
    assert result["modes"]["first"]["image_to_text_R@1"] == 0.75
    assert result["modes"]["first"]["text_to_image_R@1"] == 1.0
    assert result["shared_captions"] == 2 and result["positives"] == "own or identical caption"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("comparable"))


def test_flag_datasets_record_template_set_and_unspecified_domain(workspace, tmp_path):
    argv = [
        "eval",
        "-m",
        str(workspace["start"]),
        "--zeroshot",
        str(workspace["test"]),
        "--templates",
        "simple",
        "--mode",
        "first",
        "--out",
        str(tmp_path),
        "-q",
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    test = results["models"]["start"]["datasets"]["test"]
    assert test["template_set"] == "simple" and test["templates"] == load_templates("simple")
    assert test["domain"] == "unspecified"
    assert results["record"]["datasets"]["test"]["template_set"] == "simple"


def test_suite_datasets_take_the_suite_domain():
    entries = [
        {"name": "a", "task": "zeroshot", "path": "x"},
        {"name": "b", "task": "zeroshot", "path": "y", "domain": "general"},
    ]
    suite = load_suite({"domain": "plant", "datasets": entries})
    assert [d.domain for d in suite.datasets] == ["plant", "general"]
    assert load_suite({"datasets": entries[:1]}).datasets[0].domain == "unspecified"


def test_overrides_leave_the_callers_suite_unchanged():
    """`run_suite(suite, modes=...)` / `interpolate` apply their runtime to a copy: the Suite a
    caller passes (the quickstart reuses one for several sweeps) keeps its own settings."""
    from dalip.evaluation.suite_file import Suite, load_suite, with_overrides

    suite = load_suite(Suite(datasets=[], modes=["fused"], batch_size=64, workers=0))
    changed = with_overrides(suite, ["first", "second"], 8, 2)
    assert (changed.modes, changed.batch_size, changed.workers) == (["first", "second"], 8, 2)
    assert (suite.modes, suite.batch_size, suite.workers) == (["fused"], 64, 0)
    assert with_overrides(suite) == suite
    with pytest.raises(ValueError, match="batch_size"):
        with_overrides(suite, batch_size=0)
