"""Inference: what `predict`, `embed`, `serve` and `eval` share.

specs.py turns a model spec into a model with its transform and tokenizer (`load_model`,
`dalip.load`); runtime.py encodes images and texts (device, precision, batching, the answer
modes); images.py names and reads the images; classes.py and templates/ make zero-shot class
vectors; labels.py checks label lists; predict.py and taxon_predict.py give the top answers.
"""
