"""dalip: Distribution Alignment-based Language-Image Pre-training on OpenCLIP."""

# 0.6: dalip.load; the inference, experiments, frontier and quickstart packages (the moved
# dalip.evaluation names stay for 0.6); 0.5: the answer mode, stored per model, default first;
# 0.4: every open_clip tower family, the sigmoid loss form, padding masked for text towers
# pooled from a fixed position; 0.3: alpha 0.5 again, retention options, frontier; 0.2:
# after_norm, alpha 0.75, GPU-ready training; 0.1: before_norm, alpha 0.5
__version__ = "0.6.0"

from dalip.checkpoint import load_checkpoint  # noqa: E402
from dalip.inference.specs import load  # noqa: E402
from dalip.loss import DALIPLoss  # noqa: E402
from dalip.model.bdc import brownian_distance_covariance, upper_triangle_indices, vectorize_upper_triangle  # noqa: E402
from dalip.model.dalip_model import DALIPModel  # noqa: E402
from dalip.model.factory import create_model  # noqa: E402
from dalip.model.features import Features  # noqa: E402
from dalip.model.file_format import save_model  # noqa: E402
from dalip.model.mbdc import MBDC  # noqa: E402
from dalip.model.registry import supported_model_names  # noqa: E402

__all__ = [
    "MBDC",
    "DALIPLoss",
    "DALIPModel",
    "Features",
    "brownian_distance_covariance",
    "create_model",
    "load",
    "load_checkpoint",
    "save_model",
    "supported_model_names",
    "upper_triangle_indices",
    "vectorize_upper_triangle",
]
