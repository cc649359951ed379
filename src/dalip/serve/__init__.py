"""`dalip serve`: a local web page and JSON API to identify a photo with one or more models
and to find the most similar images of a gallery.

`engine` (what is computed) and `gallery` (listing, vector indexes and their cache) need
only dalip itself; `app` (the HTTP layer) needs the `serve` extra: FastAPI, uvicorn and
python-multipart (`pip install "dalip[serve]"`).
"""

from dalip.serve.engine import Identifier, ServeOptions
from dalip.serve.gallery import Gallery

__all__ = ["Gallery", "Identifier", "ServeOptions"]
