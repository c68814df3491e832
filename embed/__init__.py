"""Feature extraction for the retrieval comparison.

Deliberately light: ``python -m embed --help`` must not pay for torch and timm. ``embed.models.registry``
(or ``embed.models.gresnet``) registers ``gresnet50`` with timm when a model is needed.
"""

__version__ = "0.1.0"
