"""dalip: Distribution Alignment-based Language-Image Pre-training on OpenCLIP."""

from dalip.bdc import brownian_distance_covariance, upper_triangle_indices, vectorize_upper_triangle
from dalip.checkpoint import save_model
from dalip.factory import create_model, load_checkpoint
from dalip.loss import DALIPLoss
from dalip.mbdc import MBDC
from dalip.model import DALIPModel, Features, supported_model_names

__version__ = "0.1.0"

__all__ = [
    "MBDC",
    "DALIPLoss",
    "DALIPModel",
    "Features",
    "brownian_distance_covariance",
    "create_model",
    "load_checkpoint",
    "save_model",
    "supported_model_names",
    "upper_triangle_indices",
    "vectorize_upper_triangle",
]
