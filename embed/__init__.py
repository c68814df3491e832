"""Feature extraction for the retrieval comparison; importing it registers ``gresnet50`` with timm."""
from . import gresnet  # noqa: F401

__version__ = "0.1.0"
