"""Cluttered canvases with one scikit-learn digit each, and the digit's tight bounding box.

Nothing is downloaded: the glyphs are scikit-learn's bundled 8 x 8 digits, stretched to a random
width and height and placed at random on a ``CANVAS`` x ``CANVAS`` grey canvas with strokes and
noise behind them. Every image is a pure function of ``(seed, split, index)``.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 48
"""Image side in pixels; boxes are given in pixels of this canvas."""
MIN_SIDE, MAX_SIDE = 10, 36
"""Range of the digit's width and height in pixels (drawn independently: the aspect ratio varies)."""
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits  # imported when rendering, not with the task registry

    return load_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]


def render_box_image(rng: np.random.Generator, split: str, clutter: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """One ``CANVAS x CANVAS`` uint8 image and the tight box ``(x1, y1, x2, y2)`` of its digit's ink,
    in pixels (``x2``, ``y2`` exclusive). Each split draws its digits from its own fifth of the
    bundled images (train 3/5, val 1/5, test 1/5), so a test digit was never seen in training."""
    digits = _digits()
    part = _SPLIT_IDS.get(split, 2)
    pool = np.flatnonzero(np.isin(np.arange(len(digits)) % 5, [0, 1, 2] if part == 0 else [part + 2]))
    glyph = digits[pool[int(rng.integers(len(pool)))]]

    background = float(rng.uniform(0.0, 0.45))
    canvas = Image.new("F", (CANVAS, CANVAS), background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, clutter + 1))):  # strokes that cross the digit as often as not
        xy = [tuple(float(v) for v in rng.uniform(0, CANVAS, 2)) for _ in range(2)]
        draw.line(xy, fill=float(rng.uniform(0.2, 0.9)), width=int(rng.integers(1, 3)))
    image = np.asarray(canvas, dtype=np.float32).copy()

    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
    ink = np.asarray(Image.fromarray(glyph, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)
    ink = np.clip(ink, 0.0, 1.0)
    left, top = int(rng.integers(0, CANVAS - width + 1)), int(rng.integers(0, CANVAS - height + 1))
    contrast = float(rng.uniform(0.45, 0.9))
    region = image[top:top + height, left:left + width]
    image[top:top + height, left:left + width] = np.maximum(region, background + contrast * ink)

    # The box is where the digit's ink is visible, not the stretched 8 x 8 cell (digits have margins).
    rows, cols = np.flatnonzero((ink > 0.25).any(1)), np.flatnonzero((ink > 0.25).any(0))
    box = (float(left + cols[0]), float(top + rows[0]), float(left + cols[-1] + 1), float(top + rows[-1] + 1))

    image += rng.normal(0.0, rng.uniform(0.0, 0.08), size=image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8), box


def render_box_split(seed: int, split: str, size: int, clutter: int = 4) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """``size`` images ``(N, CANVAS, CANVAS)`` uint8 and their boxes, reproducible from ``(seed, split)``."""
    split_id = _SPLIT_IDS.get(split, sum(map(ord, split)))
    images = np.empty((size, CANVAS, CANVAS), dtype=np.uint8)
    boxes = []
    for i in range(size):
        images[i], box = render_box_image(np.random.default_rng([seed, split_id, i, 7]), split, clutter)
        boxes.append(box)
    return images, boxes
