"""The DALIP paper's evaluation as a shipped suite: `dalip eval --suite dalip-paper
--dataset-root DIR` on miniatures of the ten datasets in their published layouts
(CLIP_benchmark's WebDataset folders, Meta-Album Mini folders with BioCLIP's metadata.csv),
grouped means, missing datasets named one line each, `--skip-missing`, and the metadata.csv
reader's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import saved_checkpoint, user_error
from eval_fixtures import write_clip_benchmark_folder, write_metadata_folder

from dalip.cli import main
from dalip.evaluation.metadata_csv import read_metadata_folder
from dalip.evaluation.suite_file import load_suite

# The published folder names (docs/datasets.md), written here again on purpose: a rename in
# the shipped suite must show up as a failing test.
GENERAL = {
    "ImageNet-1k": "wds_imagenet1k",
    "CIFAR-100": "wds_vtab-cifar100",
    "Cars": "wds_cars",
    "Pets": "wds_vtab-pets",
    "SUN397": "wds_sun397",
}
PLANT = {
    "PlantNet": ("PLT_NET_Mini", ["Lamium_galeobdolon", "Centranthus_ruber"]),
    "Fungi": ("FNG_Mini", ["Amanita_muscaria", "Boletus_edulis"]),
    "PlantVillage": ("PLT_VIL_Mini", ["Tomato___healthy", "Potato___Early_blight"]),
    "Medicinal Leaf": ("MED_LF_Mini", ["Mentha", "Ocimum_tenuiflorum"]),
    "PlantDoc": ("PLT_DOC_Mini", ["Bell_pepper leaf spot", "Tomato leaf", "Corn Gray leaf spot"]),
}


def write_paper_datasets(root: Path) -> Path:
    for folder in GENERAL.values():
        write_clip_benchmark_folder(root / folder, ["red square", "blue circle"], templates=["a {c}."])
    for folder, classes in PLANT.values():
        write_metadata_folder(root / folder, classes)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return saved_checkpoint(tmp_path_factory.mktemp("paper-model"))[0]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_paper_datasets(tmp_path_factory.mktemp("paper-data"))


FAST = ["-q", "--device", "cpu", "--batch-size", "8", "--mode", "first"]  # no MBDC text features


def _eval(model: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "-m", f"tiny={model}", "--out", str(out), *FAST, *extra]


def _means(entry: dict, names: list[str], mode: str) -> float:
    return sum(entry["datasets"][name]["scores"][mode] for name in names) / len(names)


def test_the_paper_suite_runs_every_layout_and_groups_the_means(model, data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_eval(model, out, "--suite", "dalip-paper", "--dataset-root", str(data_root))) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["models"]["tiny"]
    assert list(entry["datasets"]) == [*GENERAL, *PLANT]
    for mode, summary in entry["summary"].items():
        assert summary["domains"]["general"] == pytest.approx(_means(entry, list(GENERAL), mode))
        assert summary["domains"]["plant"] == pytest.approx(_means(entry, list(PLANT), mode))
        assert summary["overall"] == pytest.approx(_means(entry, [*GENERAL, *PLANT], mode))
    # CLIP_benchmark's folders with their own templates; the plants with readable class names
    assert entry["datasets"]["Cars"]["templates"] == ["a {}."]
    assert entry["datasets"]["Cars"]["dataset_root"] == str(data_root / "wds_cars")
    plantnet = entry["datasets"]["PlantNet"]
    assert plantnet["class_names"] == ["Centranthus ruber", "Lamium galeobdolon"]
    assert plantnet["dataset"] == str(data_root / "PLT_NET_Mini" / "metadata.csv")
    assert plantnet["num_images"] == 4 and plantnet["template_set"] == "plant"
    assert entry["datasets"]["PlantVillage"]["class_names"] == ["Potato Early blight", "Tomato healthy"]
    assert entry["datasets"]["PlantDoc"]["num_classes"] == 3
    assert results["suite"]["name"] == "dalip-paper" and results["suite"]["data_root"] == str(data_root)
    table = capsys.readouterr().out
    assert "mean general" in table and "mean plant" in table and "overall" in table
    assert "(5 of 5)" not in table  # counts only when something was skipped
    assert (out / "results.md").read_text().startswith(table.split("\nresults: ")[0].splitlines()[0])


def test_the_shipped_halves_are_the_paper_suites_domains(data_root):
    paper = load_suite("dalip-paper", data_root=data_root)
    general = load_suite("dalip-paper-general", data_root=data_root)
    plants = load_suite("dalip-paper-plants", data_root=data_root)
    assert [d.name for d in general.datasets] == list(GENERAL)
    assert [d.name for d in plants.datasets] == list(PLANT)
    assert [d.name for d in paper.datasets] == [*GENERAL, *PLANT]
    assert general.name == "dalip-paper-general" and plants.name == "dalip-paper-plants"
    assert {d.path for d in paper.datasets} == {
        str(data_root / folder) for folder in [*GENERAL.values(), *(f for f, _ in PLANT.values())]
    }


def test_a_missing_dataset_is_one_line_naming_it_before_any_model_loads(data_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    shutil.rmtree(root / "wds_cars")
    argv = _eval(tmp_path / "never-read.safetensors", tmp_path / "out", "--suite", "dalip-paper")
    line = user_error(capsys, *argv, "--dataset-root", root)
    assert f"dataset Cars: expected {root / 'wds_cars' / 'test' / 'nshards.txt'}" in line
    assert "docs/datasets.md" in line and "--skip-missing" in line
    assert not (tmp_path / "out").exists()
    shutil.rmtree(root / "FNG_Mini")
    assert main([*argv, "--dataset-root", str(root)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[2].strip() for line in lines] == ["dataset Cars", "dataset Fungi"]
    assert all(line.startswith("dalip eval: error: dataset ") for line in lines)
    assert str(root / "FNG_Mini" / "metadata.csv") in lines[1] and "Traceback" not in "".join(lines)


def test_a_broken_dataset_fails_before_any_model_loads(data_root, tmp_path, capsys):
    """Not only its key file: what the layout declares is read up front (an image metadata.csv
    lists, CLIP_benchmark's class names), not hours into a run."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    (root / "MED_LF_Mini" / "Mentha" / "1.jpg").unlink()
    argv = _eval(tmp_path / "never-read.safetensors", tmp_path / "out", "--suite", "dalip-paper")
    line = user_error(capsys, *argv, "--dataset-root", root)
    assert str(root / "MED_LF_Mini" / "metadata.csv") in line and "Mentha/1.jpg" in line
    (root / "wds_sun397" / "classnames.txt").unlink()
    line = user_error(capsys, *argv, "--dataset-root", root)
    assert str(root / "wds_sun397" / "classnames.txt") in line
    assert not (tmp_path / "out").exists()


def test_skip_missing_runs_the_rest_and_the_means_say_how_many(model, data_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    shutil.rmtree(root / "PLT_DOC_Mini")
    out = tmp_path / "out"
    argv = _eval(model, out, "--suite", "dalip-paper-plants", "--dataset-root", str(root), "--skip-missing")
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "PlantDoc" in warnings[0] and "PLT_DOC_Mini" in warnings[0]
    results = json.loads((out / "results.json").read_text())
    entry = results["models"]["tiny"]
    ran = ["PlantNet", "Fungi", "PlantVillage", "Medicinal Leaf"]
    assert list(entry["datasets"]) == ran
    assert [d["name"] for d in results["suite"]["skipped"]] == ["PlantDoc"]
    for mode, summary in entry["summary"].items():
        assert summary["domains"]["plant"] == pytest.approx(_means(entry, ran, mode))
    assert "mean plant (4 of 5)" in captured.out and "overall (4 of 5)" in captured.out
    assert "PlantDoc" in (out / "results.md").read_text()


def test_an_unknown_suite_name_lists_the_shipped_ones(tmp_path, capsys):
    line = user_error(capsys, *_eval(tmp_path / "m.safetensors", tmp_path / "o", "--suite", "dalip-papr"))
    assert "dalip-papr" in line and "dalip-paper, dalip-paper-general, dalip-paper-plants" in line


def test_a_shipped_suite_needs_a_dataset_root(tmp_path, capsys):
    line = user_error(capsys, *_eval(tmp_path / "m.safetensors", tmp_path / "o", "--suite", "dalip-paper"))
    assert "--dataset-root" in line and "dalip-paper" in line
    line = user_error(
        capsys,
        *_eval(tmp_path / "m.safetensors", tmp_path / "o", "--zeroshot", tmp_path, "--skip-missing"),
    )
    assert "--skip-missing" in line and "--suite" in line


def test_metadata_csv_mistakes_name_the_file(tmp_path):
    folder = write_metadata_folder(tmp_path / "PLT_NET_Mini", ["Lamium_galeobdolon", "Alcea_rosea"]).parent
    paths, labels, classes = read_metadata_folder(folder)
    assert classes == ["Alcea rosea", "Lamium galeobdolon"] and labels == [1, 1, 0, 0]
    assert paths[0] == str(folder / "Lamium_galeobdolon" / "0.jpg")
    (folder / "Alcea_rosea" / "1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.csv.*1 of 4 listed images.*Alcea_rosea/1.jpg"):
        read_metadata_folder(folder)
    (folder / "metadata.csv").write_text(",filepath,species\n0,Alcea_rosea/0.jpg,Alcea_rosea\n")
    with pytest.raises(ValueError, match=r"PLT_NET_Mini/metadata.csv: missing column 'class'"):
        read_metadata_folder(folder)
    (folder / "metadata.csv").write_text("filepath,class\nAlcea_rosea/0.jpg,\n")
    with pytest.raises(ValueError, match=r"metadata.csv, line 2: empty"):
        read_metadata_folder(folder)
    with pytest.raises(FileNotFoundError, match="nowhere/metadata.csv"):
        read_metadata_folder(tmp_path / "nowhere")


def test_the_shipped_suites_are_package_data():
    """pyproject.toml's package-data carries them into a wheel (and `pip install -e .`)."""
    import dalip.evaluation.shipped_suites as shipped

    folder = Path(shipped.__file__).parent
    pattern = "evaluation/shipped_suites/*.yaml"
    assert f'"{pattern}"' in (folder.parents[3] / "pyproject.toml").read_text()
    files = sorted(folder.glob("*.yaml"))
    assert files and all(f.relative_to(folder.parents[1]).match(pattern) for f in files)
    assert {file for file, _ in shipped.SHIPPED_SUITES.values()} <= {f.name for f in files}
