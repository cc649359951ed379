"""Evaluation: zero-shot, retrieval, linear probe and few-shot as plain functions; suites of
datasets x models; WiSE-FT sweeps; model specs (dalip checkpoints, open_clip folders, plain
open_clip).

runtime.py (how: device, precision, batching) and datasets.py (what: images, captions)
serve zero_shot.py, retrieval.py and probe.py; clip_benchmark.py reads CLIP_benchmark's
WebDataset datasets for them; suite.py composes them; wiseft.py sweeps a suite.
"""
