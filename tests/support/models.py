"""GResNet test models with non-trivial weights: fusion is only tested where it has something to fold.

Defined once in benchmarks/fusion_variants.py, whose paired benchmark needs the same for its exactness figures.
"""

from benchmarks.fusion_variants import nontrivial

__all__ = ["nontrivial"]
