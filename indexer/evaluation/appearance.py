"""Low-level appearance similarity between two images: colour and structure, nothing semantic.

colour: intersection of 8x8x8 CIELAB histograms (1 = identical colour distributions, 0 = disjoint);
        CIELAB is roughly perceptually uniform, so bins are about equally distinguishable colours.
structure: SSIM of 32x32 greyscale thumbnails (1 = identical, about 0 = unrelated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np

BINS = 8
THUMB = 32
# CIELAB ranges of sRGB colours: L in [0, 100], a in about [-86, 98], b in about [-108, 95]
LAB_RANGE = ((0.0, 100.0), (-90.0, 100.0), (-110.0, 100.0))


@dataclass
class ImageAppearance:
    histogram: np.ndarray  # (BINS**3,) sums to 1
    grey: np.ndarray  # (THUMB, THUMB) in [0, 1]


def appearance(path: Path) -> ImageAppearance:
    from PIL import Image
    from skimage.color import rgb2lab

    from embed.sources.imaging import load_rgb

    image = load_rgb(path)
    small = np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    lab = rgb2lab(small).reshape(-1, 3)
    hist, _ = np.histogramdd(lab, bins=BINS, range=LAB_RANGE)
    grey = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    return ImageAppearance((hist / hist.sum()).ravel(), grey)


def colour_similarity(a: ImageAppearance, b: ImageAppearance) -> float:
    return float(np.minimum(a.histogram, b.histogram).sum())


def structure_similarity(a: ImageAppearance, b: ImageAppearance) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a.grey, b.grey, data_range=1.0))


class AppearanceCache:
    """Appearance of images by row, computed once each."""

    def __init__(self, folder: Path, relpaths):
        self.folder = Path(folder)
        self.relpaths = relpaths
        self._cache: Dict[int, ImageAppearance] = {}

    def __getitem__(self, row: int) -> ImageAppearance:
        if row not in self._cache:
            self._cache[row] = appearance(self.folder / self.relpaths[row])
        return self._cache[row]
