"""Evaluation: clip_benchmark.py reads CLIP_benchmark's WebDataset datasets and writes its
JSON results."""
