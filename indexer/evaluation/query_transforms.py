"""What users do to a query image before they send it: shifts, crops, rotations, flips, lower resolution,
re-compression, blur, colour changes, greyscale and the ImageNet-C corruptions, each at severities given in
its own units.

One definition serves the robustness evaluation (``indexer/evaluation/robustness.py``) and the app's "transform the
query" control. Every function takes and returns a PIL RGB image; the model's own preprocessing runs
afterwards, as for any query. Geometric and photometric steps are torchvision ``transforms.v2`` functionals
on uint8 tensors; the ImageNet-C families come from ``corrupt-tta`` (the maintained port of Hendrycks &
Dietterich's code: ``imagecorruptions`` 1.1.2 no longer imports with setuptools >= 81, and with a stand-in for
``pkg_resources`` its gaussian_blur, glass_blur (scikit-image 0.26 dropped ``multichannel``) and fog
(``np.float_``, gone in NumPy 2) still fail; corrupt-tta ran all 19 corruptions at severities 1, 3 and 5 on 64 and
224 px images here).

Random parameters (shift offsets, rotation sign, colour factors, noise) come from a generator seeded per query,
family, severity and draw (``query_rng``), so a transformed query is the same on every run and can be cached.

Light at import: torch, torchvision and corrupt-tta load on first use (the CLI's ``--help`` lists the families).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

# Bumped whenever a transform's pixels change: it is part of the cache identity of transformed-query embeddings.
TRANSFORMS_VERSION = 2

# Zhang 2019 ("Making Convolutional Networks Shift-Invariant Again"): 224 px windows of a 256 px resize.
SHIFT_RESIZE = 256
SHIFT_WINDOW = 224
IMAGENET_C_SIZE = 224  # the image size ImageNet-C's severities were set for


# the transforms ---------------------------------------------------------------------------------


def _tensor(image: Image.Image):
    import torchvision.transforms.v2.functional as F

    return F.pil_to_tensor(image.convert("RGB"))


def _pil(tensor) -> Image.Image:
    import torchvision.transforms.v2.functional as F

    return F.to_pil_image(tensor)


def _resize(x, height: int, width: int):
    """Bicubic with antialiasing, as the models' own preprocessing resizes (timm's eval transforms here).

    The filter matters: effnet-lite0's original comes back first for 0.69 of 200 Tiny-ImageNet queries shrunk to
    32 px and back with bilinear resampling, 0.89 with bicubic, and 0.905 when the 32 px image itself is the query."""
    import torchvision.transforms.v2.functional as F
    from torchvision.transforms import InterpolationMode

    return F.resize(x, [max(1, height), max(1, width)], interpolation=InterpolationMode.BICUBIC, antialias=True)


def translate(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """The 224 px window of the image resized to 256 px (shorter side), moved ``dx``, ``dy`` px from the centre.

    Offsets are in pixels of the 256 px resize and clipped to the image (at most 16 px either way for a square
    image): Zhang's crops at offsets 0-32 px are the centre window moved by -16..16."""
    import torchvision.transforms.v2.functional as F

    x = _tensor(image)
    h, w = x.shape[-2:]
    scale = SHIFT_RESIZE / min(h, w)
    x = _resize(x, round(h * scale), round(w * scale))
    h, w = x.shape[-2:]
    top = int(np.clip((h - SHIFT_WINDOW) // 2 + dy, 0, h - SHIFT_WINDOW))
    left = int(np.clip((w - SHIFT_WINDOW) // 2 + dx, 0, w - SHIFT_WINDOW))
    return _pil(F.crop(x, top, left, SHIFT_WINDOW, SHIFT_WINDOW))


def zoom(image: Image.Image, crop_fraction: float) -> Image.Image:
    """The centre crop keeping ``crop_fraction`` of each side, resized back to the original size."""
    import torchvision.transforms.v2.functional as F

    x = _tensor(image)
    h, w = x.shape[-2:]
    crop = F.center_crop(x, [max(1, round(h * crop_fraction)), max(1, round(w * crop_fraction))])
    return _pil(_resize(crop, h, w))


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated by ``degrees`` (counter-clockwise) about the centre, same size, corners filled black."""
    import torchvision.transforms.v2.functional as F
    from torchvision.transforms import InterpolationMode

    return _pil(F.rotate(_tensor(image), degrees, interpolation=InterpolationMode.BILINEAR, fill=0))


def flip(image: Image.Image) -> Image.Image:
    import torchvision.transforms.v2.functional as F

    return _pil(F.horizontal_flip(_tensor(image)))


def downscale(image: Image.Image, factor: float) -> Image.Image:
    """Resized to ``factor`` of each side (antialiased) and back up to the original size."""
    x = _tensor(image)
    h, w = x.shape[-2:]
    return _pil(_resize(_resize(x, round(h * factor), round(w * factor)), h, w))


def thumbnail(image: Image.Image, size_px: int) -> Image.Image:
    """Resized so that its longer side is ``size_px`` and back up to the original size (a no-op if already smaller)."""
    x = _tensor(image)
    h, w = x.shape[-2:]
    if max(h, w) <= size_px:
        return image.convert("RGB")
    s = size_px / max(h, w)
    return _pil(_resize(_resize(x, round(h * s), round(w * s)), h, w))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    import torchvision.transforms.v2.functional as F

    return _pil(F.jpeg(_tensor(image), int(quality)))


def blur(image: Image.Image, sigma_px: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma_px`` pixels of the image (kernel out to 3 sigma)."""
    import torchvision.transforms.v2.functional as F

    if sigma_px <= 0:
        return image.convert("RGB")
    kernel = 2 * math.ceil(3 * sigma_px) + 1
    return _pil(F.gaussian_blur(_tensor(image), [kernel, kernel], [float(sigma_px), float(sigma_px)]))


def colour(image: Image.Image, brightness: float, contrast: float, saturation: float, hue: float) -> Image.Image:
    """Brightness, contrast and saturation multiplied by the factors given (1 = unchanged), hue shifted by
    ``hue`` turns (-0.5..0.5): torchvision's ColorJitter steps in a fixed order."""
    import torchvision.transforms.v2.functional as F

    x = _tensor(image)
    x = F.adjust_brightness(x, brightness)
    x = F.adjust_contrast(x, contrast)
    x = F.adjust_saturation(x, saturation)
    return _pil(F.adjust_hue(x, hue))


def greyscale(image: Image.Image) -> Image.Image:
    import torchvision.transforms.v2.functional as F

    return _pil(F.rgb_to_grayscale(_tensor(image), num_output_channels=3))


def imagenet_c(image: Image.Image, corruption: str, level: int, seed: int) -> Image.Image:
    """An ImageNet-C corruption (corrupt-tta) at level 1-5, its randomness drawn from ``seed``.

    ImageNet-C's parameters are set for 224 px images (blur radii, noise grain, fog scale): a smaller image is
    upsampled to 224 px (shorter side) first and stays at that size. corrupt-tta draws from NumPy's global generator: it is seeded for the call and restored after it."""
    try:
        import corrupt_tta
    except ImportError:
        raise ImportError("the ImageNet-C families need corrupt-tta: pip install corrupt-tta") from None
    image = image.convert("RGB")
    if min(image.size) < IMAGENET_C_SIZE:
        s = IMAGENET_C_SIZE / min(image.size)
        image = _pil(_resize(_tensor(image), round(image.height * s), round(image.width * s)))
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        out = corrupt_tta.corrupt(np.asarray(image), severity=int(level), corruption_name=corruption)
    finally:
        np.random.set_state(state)
    return Image.fromarray(np.clip(np.asarray(out), 0, 255).astype(np.uint8))


# families and severities ------------------------------------------------------------------------


@dataclass(frozen=True)
class Slider:
    """One parameter of a transform as the app's control sets it."""

    label: str
    key: str  # the widget's key (the app's session state)
    low: float
    high: Optional[float]  # None: the query image's longer side, in px
    default: float


@dataclass(frozen=True)
class FamilyControl:
    """How the app's "Transform the query" control shows a family: the user picks the parameters the evaluation
    draws (``apply(image, *slider values)``), and ``words.format(*values)`` says what was done."""

    sliders: Tuple[Slider, ...]
    apply: Callable[..., Image.Image]
    words: str
    step: Optional[float] = None  # None: whole numbers


@dataclass(frozen=True)
class Family:
    """A kind of change at levels of increasing severity, each level one value of one parameter."""

    name: str
    param: str  # the parameter's name, with its unit: "shift_px", "quality", ...
    levels: Tuple[float, ...]  # mildest first
    phrase: str  # "under {value:g} px shifts": for the report's sentences
    source: str  # the library that does it
    apply: Callable[[Image.Image, float, np.random.Generator], Image.Image]
    random: bool = False  # whether each query draws random parameters
    control: Optional[FamilyControl] = None  # the app's control of it, when it has one

    def describe(self, value: float) -> str:
        return self.phrase.format(value=value, inverse=1 / value if value else float("inf"))


def _translation(image, value, rng):
    half = int(value) // 2
    return translate(image, int(rng.integers(-half, half + 1)), int(rng.integers(-half, half + 1)))


def _rotation(image, value, rng):
    return rotate(image, float(value) * (1 if rng.random() < 0.5 else -1))


def _colour(image, value, rng):
    b, c, s = rng.uniform(1 - value, 1 + value, size=3)
    return colour(image, float(b), float(c), float(s), float(rng.uniform(-value / 5, value / 5)))


def _imagenet_c(name: str):
    return lambda image, value, rng: imagenet_c(image, name, int(value), int(rng.integers(2**32)))


V2 = "torchvision.transforms.v2"
CORE_FAMILIES = (
    Family(
        "translation",
        "shift_px",
        (8, 12, 16, 24, 32),
        "under shifts of up to {value:g} px (of a 256 px resize)",
        V2,
        _translation,
        random=True,
        control=FamilyControl(
            (
                Slider("Shift right (px of the 256 px resize)", "shift_dx", -16, 16, 8),
                Slider("Shift down (px of the 256 px resize)", "shift_dy", -16, 16, 0),
            ),
            translate,
            "224 px window shifted {0:+d}, {1:+d} px",
        ),
    ),
    Family(
        "zoom",
        "crop_fraction",
        (0.9, 0.8, 0.7, 0.6, 0.5),
        "cropped to the central {value:.0%} of each side",
        V2,
        lambda im, v, rng: zoom(im, v),
        control=FamilyControl(
            (Slider("Keep this fraction of each side (centre)", "crop_fraction", 0.3, 1.0, 0.7),),
            zoom,
            "central {0:.0%} crop",
            step=0.05,
        ),
    ),
    Family(
        "rotation",
        "degrees",
        (3, 5, 10, 15, 20),
        "rotated by {value:g} degrees",
        V2,
        _rotation,
        random=True,
        control=FamilyControl(
            (Slider("Degrees (counter-clockwise)", "rotate_degrees", -45, 45, 10),), rotate, "rotated {0:+d}°"
        ),
    ),
    Family("flip", "flip", (1,), "flipped horizontally", V2, lambda im, v, rng: flip(im)),
    Family(
        "downscale",
        "factor",
        (1 / 2, 1 / 3, 1 / 4, 1 / 6, 1 / 8),
        "downscaled to 1/{inverse:g} of each side and back",
        V2,
        lambda im, v, rng: downscale(im, v),
    ),
    Family(
        "thumbnail",
        "size_px",
        (56, 48, 32, 24, 16),
        "shrunk to {value:g} px and back",
        V2,
        lambda im, v, rng: thumbnail(im, int(v)),
        control=FamilyControl(
            (Slider("Longer side (px), then back up", "size_px", 8, None, 32),), thumbnail, "shrunk to {0} px and back"
        ),
    ),
    Family(
        "jpeg",
        "quality",
        (80, 60, 40, 20, 10),
        "re-compressed at JPEG quality {value:g}",
        V2,
        lambda im, v, rng: jpeg(im, int(v)),
        control=FamilyControl((Slider("Quality", "jpeg_quality", 1, 100, 20),), jpeg, "JPEG quality {0}"),
    ),
    Family(
        "blur",
        "sigma_px",
        (0.5, 1.0, 1.5, 2.0, 3.0),
        "blurred (Gaussian, sigma {value:g} px)",
        V2,
        lambda im, v, rng: blur(im, v),
        control=FamilyControl(
            (Slider("Sigma (px)", "blur_sigma", 0.0, 5.0, 1.5),), blur, "Gaussian blur sigma {0:g} px", step=0.25
        ),
    ),
    Family(
        "colour",
        "strength",
        (0.1, 0.2, 0.3, 0.4, 0.5),
        "with colour jitter of up to {value:.0%}",
        V2,
        _colour,
        random=True,
    ),
    Family("greyscale", "greyscale", (1,), "in greyscale", V2, lambda im, v, rng: greyscale(im)),
)
# corrupt-tta's corruptions whose randomness NumPy's global seed controls (impulse_noise draws from skimage's own,
# unseeded generator, so it is left out); gaussian_blur and jpeg_compression are the core families above
IMAGENET_C_NAMES = (
    "gaussian_noise",
    "shot_noise",
    "speckle_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "fog",
    "frost",
    "snow",
    "spatter",
    "contrast",
    "brightness",
    "saturate",
    "pixelate",
    "elastic_transform",
)
IMAGENET_C_FAMILIES = tuple(
    Family(
        name,
        "imagenet_c_level",
        (1, 2, 3, 4, 5),
        f"under {name.replace('_', ' ')} (ImageNet-C level {{value:g}})",
        "corrupt-tta (ImageNet-C)",
        _imagenet_c(name),
        random=True,
    )
    for name in IMAGENET_C_NAMES
)
FAMILIES: Dict[str, Family] = {f.name: f for f in CORE_FAMILIES + IMAGENET_C_FAMILIES}
# the default set: every core family plus three ImageNet-C kinds the core ones do not cover (noise, motion, contrast)
DEFAULT_FAMILIES = tuple(f.name for f in CORE_FAMILIES) + ("gaussian_noise", "motion_blur", "contrast")
SHIFT_FAMILY = "translation"  # measured twice per query for shift consistency
# the families the app's "Transform the query" control offers, in the CLI's names and order
CONTROLLED_FAMILIES = tuple(f for f in CORE_FAMILIES if f.control is not None)


class UnknownFamily(ValueError):
    pass


def parse_families(text: Optional[str]) -> List[Family]:
    """``"translation,jpeg"`` (or ``all``, or None for the default set) -> families, in the order given."""
    if text is None or text.strip() == "":
        names = list(DEFAULT_FAMILIES)
    elif text.strip() == "all":
        names = list(FAMILIES)
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise UnknownFamily(
            f"unknown transformation famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
            f"choose from: {', '.join(FAMILIES)} (or all)"
        )
    return [FAMILIES[n] for n in dict.fromkeys(names)]


@dataclass(frozen=True)
class Condition:
    """One transformed version of every sampled query: a family at one level, one random draw."""

    family: str
    level: int  # 1-based index into the family's levels
    param: str
    value: float
    draw: int = 0  # 1: the second independent draw of a random family (shift consistency)

    @property
    def key(self) -> str:
        """A file-name part that identifies the condition (cache files)."""
        return f"{self.family}-L{self.level}-d{self.draw}"


CLEAN = Condition("clean", 0, "none", 0.0)


def chosen_levels(family: Family, severities: int) -> List[int]:
    """``severities`` levels (1-based) spread evenly from the mildest to the strongest; all levels when it is more."""
    n = len(family.levels)
    if severities >= n:
        return list(range(1, n + 1))
    if severities == 1:
        return [n]
    return sorted({int(round(i)) + 1 for i in np.linspace(0, n - 1, severities)})


def conditions_for(families: Sequence[Family], severities: int) -> List[Condition]:
    out = []
    for f in families:
        for level in chosen_levels(f, severities):
            out.append(Condition(f.name, level, f.param, float(f.levels[level - 1])))
            if f.name == SHIFT_FAMILY:
                out.append(Condition(f.name, level, f.param, float(f.levels[level - 1]), draw=1))
    return out


def query_rng(seed: int, condition: Condition, image_id: int) -> np.random.Generator:
    """The generator of one transformed query: the same for the same seed, condition and image on every run."""
    return np.random.default_rng(
        [seed, zlib.crc32(condition.family.encode()), condition.level, condition.draw, int(image_id)]
    )


def transform_query(image: Image.Image, condition: Condition, seed: int, image_id: int) -> Image.Image:
    """``image`` as the condition changes it (CLEAN: unchanged), with that query's own random draws."""
    if condition.family == CLEAN.family:
        return image.convert("RGB")
    family = FAMILIES[condition.family]
    return family.apply(image.convert("RGB"), condition.value, query_rng(seed, condition, image_id))
