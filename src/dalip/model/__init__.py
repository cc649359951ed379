"""The model: BDC math, the MBDC head, DALIPModel on open_clip, and building models by name.

bdc.py (pure math) <- mbdc.py <- dalip_model.py; towers.py reads token sets from every tower
family open_clip builds (tiny_towers.py registers tiny timm towers for tests); features.py holds
what every stage passes around (`Features`); registry.py registers our JSON architectures with
open_clip and says which it supports, catalog.py describes them (`dalip models`);
file_format.py reads and writes model files, stored_config.py checks the architecture a
file carries before any use; factory.py builds models.
"""
