"""Evaluation: zero-shot, retrieval, linear probe and few-shot as plain functions; suites of
datasets x models; WiSE-FT sweeps.

datasets.py (labelled images, caption CSVs) serves zero_shot.py, retrieval.py and probe.py,
which encode with `dalip.inference` (runtime, model specs, class vectors, templates);
clip_benchmark.py reads CLIP_benchmark's WebDataset datasets for them, metadata_csv.py
Meta-Album folders annotated by BioCLIP; suite.py composes them (suite_file.py reads a suite,
presence.py checks its datasets are there, shipped_suites/ holds the suites dalip ships, such
as the DALIP paper's); wiseft.py sweeps a suite. runtime, specs, predict, taxon_predict, labels and
templates moved to `dalip.inference` in 0.6; their names here stay for 0.6 only.
"""
