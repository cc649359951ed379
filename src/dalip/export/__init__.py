"""Exports for the tools users already run: one plain open_clip weights file, open_clip
folders (`local-dir:` / `hf-hub:`), the fused two-tower model as the same kind of folder,
and ONNX encoders.

open_clip_file.py writes the first-order model as one open_clip weights file; folder.py
writes and reads open_clip folders (open_clip_config.json + weights, plus the DALIP heads
for the fused model); onnx.py writes image and text encoders whose outputs are the
first-order, second-order and fused vectors; files.py puts files into an output folder
without touching what the export did not write.
"""
