"""The gallery index of `dalip serve`: cached on disk, rebuilt when the gallery or the checkpoint
changes; and the command's own checks (one line, exit status 2, before anything is served)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from conftest import TEST_MBDC
from eval_fixtures import write_folder, write_image

import dalip
from dalip.cli import main
from dalip.inference.runtime import Runtime
from dalip.inference.specs import load_model
from dalip.serve import Gallery
from dalip.serve.gallery import cache_file, load_or_build_index

READABLE = {"oak": "red oak", "fern": "royal fern"}


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    model.answer_mode = "fused"  # a model that answers fused finds neighbours by the fused vector
    model.save(path)
    return path


@pytest.fixture
def setup(tmp_path):
    write_folder(tmp_path / "gallery", {"oak": 3, "fern": 2}, READABLE)
    return tmp_path, load_model(_checkpoint(tmp_path / "model.safetensors", 0), "tiny")


def _index(root, loaded, cache):
    return load_or_build_index(Gallery.scan(root / "gallery"), loaded, Runtime(batch_size=4), cache)


def test_index_is_cached_and_reused_while_nothing_changes(setup):
    root, checkpoint = setup
    cache = root / "gallery" / ".dalip-index"
    built = _index(root, checkpoint, cache)
    assert not built.from_cache and built.kind == "fused" and built.vectors.shape == (5, 64)
    assert torch.allclose(built.vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    assert os.listdir(cache) == ["tiny.npz"] and cache_file(cache, "tiny") == cache / "tiny.npz"
    again = _index(root, checkpoint, cache)
    assert (
        again.from_cache and torch.equal(again.vectors, built.vectors) and torch.equal(again.rows, built.rows)
    )
    assert len(Gallery.scan(root / "gallery")) == 5  # the cache folder is not taken for a class


def test_index_is_rebuilt_when_the_gallery_changes(setup):
    root, checkpoint = setup
    cache = root / "cache"
    first = _index(root, checkpoint, cache)
    write_image(root / "gallery" / "fern" / "2.png", 200)  # a new image
    added = _index(root, checkpoint, cache)
    assert not added.from_cache and added.vectors.shape[0] == 6
    assert _index(root, checkpoint, cache).from_cache
    image = root / "gallery" / "oak" / "0.png"
    write_image(image, 90, green=120)  # same name, new content and time
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    changed = _index(root, checkpoint, cache)
    assert not changed.from_cache and not torch.equal(changed.vectors[0], first.vectors[0])


def test_index_is_rebuilt_when_the_checkpoint_changes_or_the_cache_is_damaged(setup):
    root, checkpoint = setup
    cache = root / "cache"
    first = _index(root, checkpoint, cache)
    _checkpoint(checkpoint.spec, 1)  # other weights at the same path
    checkpoint = load_model(checkpoint.spec, "tiny")
    retrained = _index(root, checkpoint, cache)
    assert not retrained.from_cache and not torch.allclose(retrained.vectors, first.vectors)
    (cache / "tiny.npz").write_bytes(b"not an npz file")
    rebuilt = _index(root, checkpoint, cache)
    assert not rebuilt.from_cache and torch.equal(rebuilt.vectors, retrained.vectors)
    assert _index(root, checkpoint, cache).from_cache


def test_unreadable_gallery_images_are_left_out(setup):
    root, checkpoint = setup
    (root / "gallery" / "oak" / "1.png").write_bytes(b"broken")
    index = _index(root, checkpoint, None)
    assert index.rows.tolist() == [0, 2, 3, 4]


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("dalip serve: error: ") and sum(": error: " in line for line in lines) == 1
    return lines[-1]


def test_serve_refuses_bad_arguments_with_one_line(setup, capsys, monkeypatch):
    root, loaded = setup
    checkpoint = loaded.spec
    assert main(["serve", "-m", str(root / "missing.safetensors")]) == 2
    assert "checkpoint not found" in _error(capsys)
    assert main(["serve", "-m", str(checkpoint), "--gallery", str(root / "nowhere")]) == 2
    assert "--gallery: " in _error(capsys)
    assert main(["serve", "-m", f"a={checkpoint}", "-m", f"a={checkpoint}"]) == 2
    assert "display names must be unique" in _error(capsys)
    assert main(["serve", "-m", str(checkpoint), "--top-k", "0"]) == 2
    assert "--top-k must be >= 1" in _error(capsys)
    assert main(["serve", "-m", str(checkpoint), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be > 0, got 0" in _error(capsys)
    (root / "labels.txt").write_text("oak\nfern\noak\n")
    assert main(["serve", "-m", str(checkpoint), "--labels", str(root / "labels.txt")]) == 2
    assert "duplicate label(s) ['oak']" in _error(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "-m", str(checkpoint), "--port", str(port)]) == 2
        assert f"--host 127.0.0.1 --port {port}: cannot listen there" in _error(capsys)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert main(["serve", "-m", str(checkpoint)]) == 2
    assert "pip install 'dalip[serve]'" in _error(capsys)
