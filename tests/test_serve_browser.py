"""`dalip serve` in a real browser: the command started as a user starts it, headless Chromium
(Debian's `chromium`, driven by Playwright) uploads photos through the page.

Skipped when Chromium or Playwright is missing, unless DALIP_REQUIRE_BROWSER=1 (set by
.ci/run), which turns their absence into a failure.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import torch
from conftest import TEST_MBDC

import dalip
from dalip.data.synthetic import make_dataset
from dalip.data.taxonomy import read_taxonomy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("DALIP_REQUIRE_BROWSER") == "1"
START_SECONDS = 180  # loading torch and the model on a busy 2-core machine


def _browser():
    """Playwright's sync API, or skip (fail under DALIP_REQUIRE_BROWSER=1) naming what is missing."""
    missing = []
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright package (pip install -e '.[test]')")
    if CHROMIUM is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if REQUIRED:
            pytest.fail(message + "; DALIP_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)
    return sync_api


def _start_server(arguments, tmp_path):
    """Run `dalip serve` on a free port; returns (process, URL) once it prints its address."""
    command = [
        sys.executable,
        "-c",
        "import sys; from dalip.cli import main; sys.exit(main())",
        "serve",
        *arguments,
    ]
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=START_SECONDS)
            found = re.search(r"open (http://\S+) in a browser", line)
            if found:
                return process, found.group(1)
    except queue.Empty:
        process.kill()
        pytest.fail(f"dalip serve did not start; its log:\n{(tmp_path / 'serve.log').read_text()}")


def _stop(process):
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _ready_page(sync_api, url):
    """Headless Chromium on the page, once the server says it is ready."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#identify:not([disabled])", timeout=START_SECONDS * 1000)
        yield page
        browser.close()


def _tiny_plants(tmp_path, species, train_per_class, test_per_class):
    """Generated plants under tmp_path/data and a random tiny model at tmp_path/tiny.safetensors."""
    make_dataset(
        str(tmp_path / "data"),
        seed=0,
        species=species,
        image_size=32,
        train_per_class=train_per_class,
        val_per_class=1,
        test_per_class=test_per_class,
        general_classes=0,
    )
    torch.manual_seed(0)
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    model.save(tmp_path / "tiny.safetensors")


def test_page_identifies_an_upload_and_shows_neighbours(tmp_path):
    sync_api = _browser()
    _tiny_plants(tmp_path, species=3, train_per_class=3, test_per_class=1)
    species = (tmp_path / "data" / "plant" / "train" / "classes.txt").read_text().splitlines()
    names = [line.split("\t")[1] for line in species]
    upload = sorted((tmp_path / "data" / "plant" / "test").rglob("*.jpg"))[0]
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")

    process, url = _start_server(
        [
            "-m",
            f"tiny={tmp_path / 'tiny.safetensors'}",
            "--gallery",
            str(tmp_path / "data" / "plant" / "train"),
            "--port",
            "0",
            "--top-k",
            "3",
        ],
        tmp_path,
    )
    try:
        with _ready_page(sync_api, url) as page:
            assert page.inner_text("#about") == "Models: tiny · 9 reference photos"

            page.set_input_files("#file", str(upload))
            page.wait_for_selector(".neighbour img", timeout=60_000)
            page.wait_for_function("Array.from(document.images).every(image => image.complete)")
            cards = page.query_selector_all(".card.prediction")
            assert [card.get_attribute("data-model") for card in cards] == [
                "tiny",
                "tiny/fused",
            ]  # its own mode (first: none stored) first
            for card in cards:
                shown = [row.inner_text() for row in card.query_selector_all(".row .label")]
                assert len(shown) == 3 and set(shown) <= set(names)
                assert re.fullmatch(r"\d+ ms", card.query_selector(".time").inner_text())
            neighbours = page.query_selector_all(".neighbour")
            assert len(neighbours) == 8
            assert all(
                image.evaluate("image => image.naturalWidth") > 0
                for image in page.query_selector_all(".neighbour img")
            )
            assert all(any(name in figure.inner_text() for name in names) for figure in neighbours)
            assert page.is_visible("#preview") and page.is_hidden("#error")
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)

            page.set_input_files("#file", str(notes))  # a bad upload: a message, the page stays usable
            page.wait_for_selector("#error:not([hidden])")
            assert "notes.txt: not a JPEG, PNG or WebP image" in page.inner_text("#error")
            page.check("#use-mine")
            page.fill("#labels", "Quercus rubra\nAcer saccharum")
            page.set_input_files("#file", str(upload))
            page.wait_for_selector("#error", state="hidden")
            page.wait_for_function("document.querySelectorAll('.card.prediction .row').length == 4")
            shown = {row.inner_text() for row in page.query_selector_all(".card.prediction .row .label")}
            assert shown == {"Quercus rubra", "Acer saccharum"}
    finally:
        _stop(process)
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    assert (tmp_path / "data" / "plant" / "train" / ".dalip-index" / "tiny.npz").is_file()


@pytest.mark.slow  # a second server and browser (~45 s); .ci/run runs it
def test_page_answers_several_photos_of_one_plant_as_a_taxon(tmp_path):
    sync_api = _browser()
    _tiny_plants(tmp_path, species=4, train_per_class=2, test_per_class=2)
    gallery = tmp_path / "data" / "plant" / "train"
    taxa = list(read_taxonomy(gallery / "taxonomy.csv").taxa.values())
    genus = taxa[0].name("genus")
    photos = [str(p) for p in sorted((tmp_path / "data" / "plant" / "test").rglob("*.jpg"))[:2]]

    arguments = ["-m", f"tiny={tmp_path / 'tiny.safetensors'}", "--gallery", str(gallery), "--port", "0"]
    process, url = _start_server([*arguments, "--taxonomy", "auto", "--top-k", "3"], tmp_path)
    try:
        with _ready_page(sync_api, url) as page:
            assert page.inner_text("#server-labels").startswith(f"the taxonomy's {len(taxa)} species")
            ranks = [option.inner_text() for option in page.query_selector_all("#rank option")]
            assert ranks == ["kingdom", "phylum", "class", "order", "family", "genus", "species"]

            page.set_input_files("#file", photos)  # two photos of one plant: one answer per model
            page.wait_for_selector(".card.prediction .answer")
            assert "2 photos of one plant" in page.inner_text("#status")
            assert page.inner_text("#photos-note") == "and 1 more photo of the same plant, answered together"
            answer = page.inner_text(".card.prediction .answer")
            assert re.match(
                r"species \S+ \S+ .*\d+\.\d% *\n *Plantae › Tracheophyta › Magnoliopsida › ", answer
            )

            page.select_option("#rank", "genus")
            page.click("#identify")
            page.wait_for_function(
                "document.querySelector('.answer .taxon').textContent.startsWith('genus ')"
            )
            shown = {row.inner_text() for row in page.query_selector_all(".card.prediction .row .label")}
            assert shown <= {t.name("genus") for t in taxa}

            page.check("#use-checklist")
            page.fill("#subset", f"genus={genus}")
            page.select_option("#rank", "species")
            page.click("#identify")
            page.wait_for_function(
                "document.querySelector('.answer .taxon').textContent.startsWith('species ')"
            )
            rows = [
                row.inner_text()
                for row in page.query_selector_all(".card.prediction[data-model=tiny] .row .label")
            ]
            assert rows and all(row.startswith(genus + " ") for row in rows)
            page.screenshot(path=str(tmp_path / "serve-taxa.png"), full_page=True)
    finally:
        _stop(process)
    assert (tmp_path / "serve-taxa.png").stat().st_size > 10_000
