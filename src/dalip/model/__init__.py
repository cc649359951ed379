"""The model: BDC math, the MBDC head, DALIPModel on open_clip, and building models by name.

bdc.py (pure math) <- mbdc.py <- dalip_model.py; features.py holds what every stage
passes around (`Features`); registry.py registers our JSON architectures with open_clip;
file_format.py reads and writes model files; factory.py builds models.
"""
