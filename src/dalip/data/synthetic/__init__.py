"""The embedded dataset: fine-grained synthetic plants and general pictures, written as image
folders, CSV files and WebDataset shards (generator.py; leaves.py and render.py draw,
plants.py and general.py name and caption, writers.py writes)."""

from dalip.data.synthetic.generator import MANIFEST, GeneratorOptions, make_dataset

__all__ = ["MANIFEST", "GeneratorOptions", "make_dataset"]
