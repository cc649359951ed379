"""The CLIP_benchmark bridge: `dalip eval --clip-benchmark wds/NAME --dataset-root DIR` on
CLIP_benchmark's WebDataset layout, and parity with CLIP_benchmark's own metric functions
on the exported first-order model. A huge declared shard count is refused in a short message."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TEST_MBDC
from PIL import Image

import dalip
from dalip.cli import main

CLASSES = ["red oak", "sugar maple", "royal fern", "blue square", "two circles"]
TEMPLATES = ["a photo of a {c}.", "a close-up photo of the {c}."]


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(root: Path, samples: list[tuple[bytes, str, str]], shards: int = 2) -> Path:
    """CLIP_benchmark's layout: samples (image, member extension, member text) over shards."""
    (root / "test").mkdir(parents=True)
    for shard in range(shards):
        with tarfile.open(root / "test" / f"{shard}.tar", "w") as tar:
            for index in range(shard, len(samples), shards):
                image, extension, text = samples[index]
                _add(tar, f"s{index:07d}.png", image)
                _add(tar, f"s{index:07d}.{extension}", text.encode())
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-benchmark")
    torch.manual_seed(7)
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    model.save(root / "model.safetensors")
    classification = write_wds(root / "leaves", [(_png(i), "cls", str(i % 5)) for i in range(15)])
    (classification / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (classification / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    captions = [f"a {name}, picture {i}\nthe {name} number {i}" for i, name in enumerate(CLASSES * 2)]
    retrieval = write_wds(
        root / "captions", [(_png(100 + i), "txt", text) for i, text in enumerate(captions)]
    )
    (retrieval / "dataset_type.txt").write_text("retrieval\n")
    assert (
        main(["export", str(root / "model.safetensors"), str(root / "exported"), "--format", "open_clip-dir"])
        == 0
    )
    return root


@pytest.fixture(scope="module")
def dalip_results(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip-benchmark-out")
    argv = [
        "eval",
        "-m",
        f"tiny={workspace / 'model.safetensors'}",
        "--clip-benchmark",
        "wds/leaves",
        "--clip-benchmark",
        "wds/captions",
        "--dataset-root",
        str(workspace / "{name}"),
        "--mode",
        "all",
        "--out",
        str(out),
        "-q",
        "--batch-size",
        "4",
    ]
    assert main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def _clip_benchmark_loader(root: Path, preprocess, label: str, batch_size: int = 4):
    """CLIP_benchmark's own WebDataset pipeline (its datasets.builder.build_wds_dataset and
    cli.run), which needs packages its metric modules do not."""
    import webdataset as wds

    shards = str(root / "test" / "{0..1}.tar")
    dataset = (
        wds.WebDataset(shards, nodesplitter=lambda src: src, shardshuffle=False)
        .decode(wds.autodecode.ImageHandler("pil", extensions=["webp", "png", "jpg", "jpeg"]))
        .to_tuple(["webp", "png", "jpg", "jpeg"], label)
        .map_tuple(preprocess, str.splitlines if label == "txt" else None)
    )
    dataset.classes = CLASSES if label == "cls" else None
    return torch.utils.data.DataLoader(dataset.batched(batch_size), batch_size=None, shuffle=False)


def _scalar_float(value):
    """float() as NumPy 1 gave it: CLIP_benchmark 1.6.2 calls float() on a 1-element 1-d
    array, which NumPy 2 refuses."""
    return float(np.asarray(value).reshape(-1)[0]) if isinstance(value, np.ndarray) else float(value)


def test_clip_benchmark_metrics_on_the_export_match_dalip_first_order(workspace, dalip_results, monkeypatch):
    zeroshot_classification = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    zeroshot_retrieval = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    monkeypatch.setattr(zeroshot_classification, "float", _scalar_float, raising=False)
    identifier = f"local-dir:{workspace / 'exported'}"
    model, _, preprocess = open_clip.create_model_and_transforms(identifier)  # as its load_open_clip does
    tokenizer = open_clip.get_tokenizer(identifier)
    theirs = zeroshot_classification.evaluate(
        model.eval(),
        _clip_benchmark_loader(workspace / "leaves", preprocess, "cls"),
        tokenizer,
        CLASSES,
        TEMPLATES,
        device="cpu",
        amp=False,
    )
    ours = dalip_results[1]["models"]["tiny"]["datasets"]["leaves"]["modes"]["first"]
    assert theirs["acc1"] == pytest.approx(ours["top1"]) and theirs["acc5"] == pytest.approx(ours["top5"])
    assert theirs["mean_per_class_recall"] == pytest.approx(ours["mean_per_class_recall"])
    theirs = zeroshot_retrieval.evaluate(
        model,
        _clip_benchmark_loader(workspace / "captions", preprocess, "txt"),
        tokenizer,
        device="cpu",
        amp=False,
        recall_k_list=[1, 5],
    )
    ours = dalip_results[1]["models"]["tiny"]["datasets"]["captions"]["modes"]["first"]
    for k in (1, 5):
        assert theirs[f"image_retrieval_recall@{k}"] == pytest.approx(ours[f"text_to_image_R@{k}"])
        assert theirs[f"text_retrieval_recall@{k}"] == pytest.approx(ours[f"image_to_text_R@{k}"])


def test_results_are_written_in_clip_benchmark_json_too(dalip_results):
    out, results = dalip_results
    leaves = results["models"]["tiny"]["datasets"]["leaves"]
    assert leaves["num_images"] == 15 and leaves["domain"] == "unspecified"
    assert leaves["templates"] == [t.replace("{c}", "{}") for t in TEMPLATES]
    assert leaves["template_set"].endswith("zeroshot_classification_templates.txt")
    assert results["models"]["tiny"]["datasets"]["captions"]["num_texts"] == 20
    dumps = sorted((out / "clip_benchmark").glob("*.json"))
    assert len(dumps) == 6  # 2 datasets x 3 modes
    fused = json.loads(
        (out / "clip_benchmark" / "wds_leaves_tiny_fused_zeroshot_classification.json").read_text()
    )
    assert fused["dataset"] == "wds/leaves" and fused["task"] == "zeroshot_classification"
    assert fused["metrics"]["acc1"] == leaves["modes"]["fused"]["top1"] and fused["similarity"] == "fused"
    retrieval = json.loads(
        (out / "clip_benchmark" / "wds_captions_tiny_first_zeroshot_retrieval.json").read_text()
    )
    assert set(retrieval["metrics"]) == {
        f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)
    }
    assert not math.isnan(fused["metrics"]["acc5"])


def test_clip_benchmark_mistakes_are_one_line(workspace, tmp_path, capsys):
    model = str(workspace / "model.safetensors")
    assert (
        main(
            [
                "eval",
                "-m",
                model,
                "--clip-benchmark",
                "leaves",
                "--dataset-root",
                str(workspace / "leaves"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "expected wds/NAME" in capsys.readouterr().err
    (tmp_path / "broken" / "test").mkdir(parents=True)
    assert (
        main(
            [
                "eval",
                "-m",
                model,
                "--clip-benchmark",
                "wds/broken",
                "--dataset-root",
                str(tmp_path / "broken"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "classnames.txt" in error[0]


def test_a_huge_shard_count_gives_a_short_message(tmp_path):
    from dalip.evaluation.clip_benchmark import _shards

    (tmp_path / "nshards.txt").write_text("1000000")
    with pytest.raises(FileNotFoundError) as caught:
        _shards(tmp_path)
    assert len(str(caught.value)) < 300 and "and 999,995 more missing (1,000,000 named" in str(caught.value)
    (tmp_path / "nshards.txt").write_text("10000000000")
    with pytest.raises(ValueError, match="from 1 to 1,000,000"):
        _shards(tmp_path)
