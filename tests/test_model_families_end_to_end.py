"""`dalip train --set model.name=<tiny member of each family>` trains, evaluates, exports and
predicts on the CPU, through the same commands users run; the SigLIP-style model is tuned with
the DALIP-sigmoid loss and evaluated, served, interpolated and exported to ONNX."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_fixtures import write_config

import dalip
from dalip.cli import main
from dalip.inference.predict import predict
from dalip.inference.specs import load_model
from dalip.model.factory import TINY_ARCHITECTURES

FAMILIES = [name for name in TINY_ARCHITECTURES if name != "dalip-tiny"]
# Two families in the default suite (a timm ViT with the sigmoid form, open_clip's ResNet);
# every family under `-m slow` (CI runs both).
QUICK = {"dalip-tiny-sigmoid"}


def _config(train_data, out, name, **fields):
    model = {"name": name, "config_file": None, "heads": 2, "reduced_dim": 8, "dropout": 0.0}
    return write_config(train_data, out, model={**model, **fields.pop("model", {})}, **fields)


def _suite(train_data, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "modes: [fused, first, second]\nbatch_size: 8\n"
        "datasets:\n"
        f"  - {{name: plants, task: zeroshot, domain: plant, path: {train_data / 'plant/test'}}}\n"
        f"  - {{name: shapes, task: zeroshot, domain: general, path: {train_data / 'general/test'}}}\n"
    )
    return suite


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES]
)
def test_each_family_trains_evaluates_exports_and_predicts(name, train_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(train_data, out, name, steps=2, checkpoint_every=1))]) == 0
    model = dalip.load_checkpoint(out / "model.safetensors")
    assert model.model_name == name
    assert model.loss_form == ("sigmoid" if name == "dalip-tiny-sigmoid" else "softmax")

    evaluated = tmp_path / "eval"
    argv = ["eval", "-m", str(out / "model.safetensors"), "--suite", str(_suite(train_data, tmp_path))]
    assert main([*argv, "--out", str(evaluated), "--device", "cpu", "-q"]) == 0
    results = json.loads((evaluated / "results.json").read_text())
    (entry,) = results["models"].values()
    assert entry["modes"] == ["fused", "first", "second"]
    assert set(entry["datasets"]["plants"]["modes"]) == {"fused", "first", "second"}

    folder = tmp_path / "open_clip_dir"
    assert main(["export", str(out / "model.safetensors"), str(folder), "--format", "open_clip-dir"]) == 0
    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    size = preprocess.transforms[0].size
    size = size if isinstance(size, int) else size[0]
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        plain = clip.eval().encode_image(images, normalize=True)
        assert torch.equal(plain, model.encode_image(images, second_order=False).first)

    fused = tmp_path / "fused_dir"
    assert main(["export", str(out / "model.safetensors"), str(fused), "--format", "fused-dir"]) == 0
    loaded = load_model(f"local-dir:{fused}")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model.encode_image(images).second, model.encode_image(images).second
        )

    images_folder = str(train_data / "plant/test")
    labels = "phii,dentata,lobata,palminervis"
    argv = ["predict", images_folder, "-m", str(out / "model.safetensors"), "--labels", labels]
    capsys.readouterr()
    assert main([*argv, "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert len(rows) == 8 and all(0.0 <= p["probability"] <= 1.0 for row in rows for p in row["predictions"])

    vectors = tmp_path / "images.npz"
    argv = ["embed", "-m", str(out / "model.safetensors"), "--images", images_folder, "--out", str(vectors)]
    assert main([*argv, "--fused", "-q"]) == 0
    stored = np.load(vectors)
    assert stored["fused"].shape == (8, 2 * model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(stored["fused"], axis=1), 1.0, atol=1e-5)


def test_a_tiny_siglip_style_model_tunes_with_the_dalip_sigmoid_loss(train_data, tmp_path):
    """The sigmoid form trains both biases, is stored with the model and is what it answers with:
    `predict` gives sigmoid probabilities (each label on its own), serve's API the same."""
    out = tmp_path / "run"
    start = dalip.create_model("dalip-tiny-sigmoid", heads=2, reduced_dim=8)[0]
    argv = ["train", "--config", str(_config(train_data, out, "dalip-tiny-sigmoid", steps=6))]
    assert main([*argv, "--set", "optim.lr=1e-3"]) == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert steps and all(np.isfinite(row["loss"]) for row in steps)
    state = load_file(str(out / "model.safetensors"))
    assert state["logit_bias_second"].item() != pytest.approx(-10.0, abs=1e-7)
    assert state["clip.logit_bias"].item() != pytest.approx(-10.0, abs=1e-7)
    assert start.loss_form == "sigmoid"

    model = dalip.load_checkpoint(out / "model.safetensors")
    loaded = load_model(str(out / "model.safetensors"))
    labels = ["phii", "dentata", "lobata", "palminervis"]
    result = predict(
        loaded.model,
        [str(train_data / "plant/test")],
        labels,
        loaded.tokenizer,
        loaded.preprocess,
        mode="fused",
        top_k=4,
    )
    probabilities = [p["probability"] for p in result[0]["predictions"]]
    assert sum(probabilities) != pytest.approx(1.0, abs=1e-3)  # sigmoid: each label on its own
    scale = model.clip.logit_scale.exp().clamp(max=100)
    with torch.no_grad():
        image = model.encode_image(loaded.preprocess(Image.open(result[0]["image"]).convert("RGB"))[None])
        texts = model.encode_text(loaded.tokenizer(labels))
        expected = torch.sigmoid(
            model.alpha * (scale * image.first @ texts.first.T + model.clip.logit_bias)
            + (1 - model.alpha) * (scale * image.second @ texts.second.T + model.logit_bias_second)
        )[0]
    assert sorted(probabilities, reverse=True) == pytest.approx(
        sorted(expected.tolist(), reverse=True), abs=1e-5
    )


@pytest.mark.slow
def test_onnx_encoders_of_a_timm_family_match_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model, _, _, tokenizer = dalip.create_model("dalip-tiny-sigmoid", heads=2, reduced_dim=8, dropout=0.0)
    model.save(tmp_path / "model.safetensors")
    out = tmp_path / "onnx"
    assert main(["export", str(tmp_path / "model.safetensors"), str(out), "--format", "onnx"]) == 0
    model = dalip.load_checkpoint(tmp_path / "model.safetensors")
    images, texts = torch.rand(3, 3, 64, 64), tokenizer(["a fern", "two blue squares", "an oak leaf"])
    encoders = (
        ("image_encoder.onnx", images, model.encode_image),
        ("text_encoder.onnx", texts, model.encode_text),
    )
    for file, value, encode in encoders:
        session = ort.InferenceSession(str(out / file), providers=["CPUExecutionProvider"])
        first, second = session.run(["first", "second"], {session.get_inputs()[0].name: value.numpy()})
        with torch.no_grad():
            expected = encode(value)
        np.testing.assert_allclose(first, expected.first.numpy(), atol=1e-4)
        np.testing.assert_allclose(second, expected.second.numpy(), atol=1e-4)
    logits = json.loads((out / "dalip_onnx.json").read_text())["logits"]
    assert logits["form"] == "sigmoid" and logits["logit_bias"] == pytest.approx(-10.0)
    assert logits["logit_scale"] == pytest.approx(10.0, rel=1e-5)


def test_serve_answers_a_sigmoid_model_as_dalip_predict_does(train_data, tmp_path, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from dalip.serve import Gallery, Identifier, ServeOptions
    from dalip.serve.app import create_app

    torch.manual_seed(0)
    model, *_ = dalip.create_model("dalip-tiny-sigmoid", heads=2, reduced_dim=8)
    model.save(tmp_path / "model.safetensors")
    spec = str(tmp_path / "model.safetensors")
    gallery = Gallery.scan(train_data / "plant/test")
    identifier = Identifier(
        [load_model(spec, "tuned")], gallery.classes, gallery, ServeOptions(top_k=3), tmp_path / "c"
    )
    identifier.prepare()
    image = sorted(p for p in (train_data / "plant/test").rglob("*.jpg"))[0]
    answer = TestClient(create_app(identifier)).post(
        "/api/predict",
        files={"image": ("leaf.jpg", image.read_bytes())},
        data={"labels": "phii\nlobata\ndentata"},
    )
    assert answer.status_code == 200
    served = answer.json()["models"]["tuned"]
    capsys.readouterr()
    argv = ["predict", str(image), "-m", spec, "--labels", "phii,lobata,dentata", "--top-k", "3", "--json"]
    assert main(argv) == 0
    assert served == json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert sum(p["probability"] for p in served) != pytest.approx(1.0, abs=1e-3)  # sigmoid: label by label


def test_wise_ft_interpolates_a_timm_family_and_its_biases(train_data, tmp_path):
    """`dalip interpolate` between two sigmoid-form checkpoints of a timm tower: w=0 is the start
    model, w=1 the tuned one, biases and heads interpolated with the towers."""
    from dalip.evaluation.wiseft import interpolate_state

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, *_ = dalip.create_model("dalip-tiny-sigmoid", heads=2, reduced_dim=8)
        with torch.no_grad():
            model.clip.logit_bias.fill_(-10.0 + 4 * seed)
        model.save(tmp_path / f"m{seed}.safetensors")
        models.append(model)
    middle = interpolate_state(models[0].state_dict(), models[1].state_dict(), 0.5)
    assert middle["clip.logit_bias"].item() == pytest.approx(-8.0)
    softmax_start = {k: v for k, v in models[0].state_dict().items() if k != "clip.logit_bias"}
    kept = interpolate_state(softmax_start, models[1].state_dict(), 0.5)  # a CLIP start tuned as SigLIP
    assert kept["clip.logit_bias"].item() == pytest.approx(-6.0)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"datasets:\n  - {{name: zs, task: zeroshot, domain: plant, path: {train_data / 'plant/test'}}}\n"
    )
    argv = [
        "interpolate",
        "--start",
        str(tmp_path / "m0.safetensors"),
        "--tuned",
        str(tmp_path / "m1.safetensors"),
    ]
    argv += ["--weights", "0,0.5,1", "--suite", str(suite), "--out", str(tmp_path / "out"), "-q"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [point["weight"] for point in results["interpolation"]] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("name", ["dalip-tiny-pe", pytest.param("dalip-tiny-coca", marks=pytest.mark.slow)])
def test_retention_and_checkpointing_train_a_timm_family(name, train_data, tmp_path):
    """LoRA on timm's qkv rows, L2-SP, distillation and open_clip's gradient checkpointing on a
    PE-Core-style tower (CoCa under -m slow): a run from a start model finishes with finite losses."""
    torch.manual_seed(0)
    start, *_ = dalip.create_model(name, heads=2, reduced_dim=8)
    start.save(tmp_path / "start.safetensors")
    settings = dict(
        model={"pretrained": str(tmp_path / "start.safetensors")},
        lora={"rank": 2, "targets": ["q", "v", "mlp"]},
        l2sp={"coefficient": 0.1},
        distill={"coefficient": 1.0},
        grad_checkpointing=True,
        steps=2,
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(train_data, out, name, **settings))]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [row for row in rows if "loss" in row]
    assert losses and all(np.isfinite([r["loss"], r["l2sp_loss"], r["distill_loss"]]).all() for r in losses)
    tuned = dalip.load_checkpoint(out / "model.safetensors")  # adapters merged into the towers' weights
    assert not any("lora_" in key for key in tuned.state_dict())


@pytest.mark.slow
def test_a_mixlaw_study_runs_on_a_sigmoid_timm_model(train_data, tmp_path, capsys):
    """`dalip mixlaw` from a SigLIP-style start model: the pilots tune with the DALIP-sigmoid
    loss and the held-out losses are SigLIP's (the model's own form)."""
    torch.manual_seed(0)
    start, *_ = dalip.create_model("dalip-tiny-sigmoid", heads=2, reduced_dim=8)
    start.save(tmp_path / "start.safetensors")
    sources = [
        {
            "kind": "csv",
            "path": str(train_data / f"{domain}/train/captions.csv"),
            "domain": domain,
            "weight": weight,
        }
        for domain, weight in (("plant", 10.0), ("general", 3.0))
    ]
    start_model = {"pretrained": str(tmp_path / "start.safetensors")}
    config = _config(
        train_data,
        tmp_path / "base",
        "dalip-tiny-sigmoid",
        steps=4,
        data={"sources": sources},
        model=start_model,
    )
    argv = [
        "mixlaw",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "study"),
        "--shares",
        "0.5,0.65,0.8,0.9",
    ]
    argv += ["--val", f"plant={train_data / 'plant/val/captions.csv'}"]
    argv += ["--val", f"general={train_data / 'general/val/captions.csv'}", "--weight", "plant=1"]
    argv += ["--weight", "general=1", "--resamples", "10", "--pairs-per-batch", "4"]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "study" / "mixlaw.json").read_text())
    assert len(results["pilots"]) == 4 and set(results["laws"]) == {"plant", "general"}
    measured = next((tmp_path / "study" / "measures").glob("*.json"))
    assert '"form": "sigmoid"' in measured.read_text()
