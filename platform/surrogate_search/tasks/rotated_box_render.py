"""Cluttered canvases with one rotated word each, and the word's rotated box.

Nothing is downloaded: words come from the task vocabulary (``words.txt``), drawn in the fonts that
Pillow and matplotlib ship, turned by a random angle (upside down too), scaled and placed at random
on a ``CANVAS`` x ``CANVAS`` grey canvas with strokes and noise behind them. Every image is a pure
function of ``(seed, split, index)``.

A box is ``(cx, cy, w, h, theta)`` in pixels of the canvas (x to the right, y down): the centre,
the side along the text and the side across it, and the angle of the ``w`` side from the x axis in
radians (positive turns clockwise on screen, since y points down). The box of a word is the ink's
tight rectangle in the word's own frame, turned with it: the smallest rectangle at the drawn angle
that holds the ink. Labels are canonical: ``w >= h`` and ``theta`` in ``[-pi/2, pi/2)``
(:func:`canonical_box`), since a rectangle is the same after half a turn.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from surrogate_search.tasks.text_render import _font, font_files, vocabulary

CANVAS = 64
"""Image side in pixels; boxes are given in pixels of this canvas."""
MARGIN = 2
"""Pixels between the turned word's outer extent and the canvas edge."""
MIN_LENGTH, MAX_LENGTH = 2, 8
"""Letters in a word: two-letter words are nearly square, where ``w`` and ``h`` trade places."""
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def canonical_box(cx: float, cy: float, w: float, h: float, theta: float) -> tuple[float, float, float, float, float]:
    """The same rectangle with ``w >= h`` and ``theta`` in ``[-pi/2, pi/2)``."""
    if h > w:
        w, h, theta = h, w, theta + math.pi / 2
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2
    return cx, cy, w, h, theta


@functools.lru_cache(maxsize=1)
def split_words() -> dict[str, tuple[str, ...]]:
    """Each split's words, disjoint: train every word whose place in the sorted vocabulary is 0, 1
    or 2 modulo 5, val those at 3, test those at 4 (so a test word was never seen in training)."""
    words = [w for w in vocabulary() if MIN_LENGTH <= len(w) <= MAX_LENGTH]
    return {"train": tuple(w for i, w in enumerate(words) if i % 5 < 3),
            "val": tuple(w for i, w in enumerate(words) if i % 5 == 3),
            "test": tuple(w for i, w in enumerate(words) if i % 5 == 4)}


def _ink(word: str, rng: np.random.Generator) -> Image.Image:
    """The word's ink as an ``L`` mask, cropped to the pixels where it is clearly visible."""
    shown = {0: word, 1: word.upper(), 2: word.capitalize()}[int(rng.integers(3))]
    fonts = font_files()
    font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(12, 25)))
    left, top, right, bottom = font.getbbox(shown)
    mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(mask).text((2 - left, 2 - top), shown, font=font, fill=255)
    ink = np.asarray(mask) > 64
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return mask.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def render_rotated_image(rng: np.random.Generator, split: str, clutter: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """One ``CANVAS x CANVAS`` uint8 image and the canonical box ``(cx, cy, w, h, theta)`` of its
    word's ink, in pixels and radians."""
    words = split_words()[split if split in _SPLIT_IDS else "test"]
    mask = _ink(words[int(rng.integers(len(words)))], rng)
    width, height = mask.size
    angle = float(rng.uniform(-math.pi, math.pi))
    cos, sin = math.cos(angle), math.sin(angle)
    # A random scale, shrunk where the turned word would not fit on the canvas.
    room = CANVAS - 2 * MARGIN
    scale = min(float(rng.uniform(0.8, 1.25)), room / (width * abs(cos) + height * abs(sin)),
                room / (width * abs(sin) + height * abs(cos)))
    half_x = scale * (width * abs(cos) + height * abs(sin)) / 2
    half_y = scale * (width * abs(sin) + height * abs(cos)) / 2
    cx, cy = (MARGIN + half + float(rng.random()) * max(0.0, room - 2 * half) for half in (half_x, half_y))
    # Canvas point p comes from mask point R(-angle)(p - c) / scale + (width, height) / 2; Pillow's
    # affine map reads pixel centres at half-integers, so the mask's edges land on the box's edges.
    a, b, d, e = cos / scale, sin / scale, -sin / scale, cos / scale
    ink = mask.transform((CANVAS, CANVAS), Image.AFFINE, (a, b, width / 2 - a * cx - b * cy, d, e,
                                                          height / 2 - d * cx - e * cy), resample=Image.BILINEAR)

    background = float(rng.uniform(0.1, 0.9))
    canvas = Image.new("F", (CANVAS, CANVAS), background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, clutter + 1))):  # strokes that cross the word as often as not
        xy = [tuple(float(v) for v in rng.uniform(0, CANVAS, 2)) for _ in range(2)]
        draw.line(xy, fill=float(np.clip(background + rng.normal(0, 0.25), 0, 1)), width=int(rng.integers(1, 3)))
    image = np.asarray(canvas, dtype=np.float32).copy()
    contrast = float(rng.uniform(0.35, 0.7)) * (1 if background < 0.5 else -1)
    image += contrast * np.asarray(ink, dtype=np.float32) / 255.0
    image += rng.normal(0.0, rng.uniform(0.0, 0.06), size=image.shape).astype(np.float32)
    box = canonical_box(cx, cy, scale * width, scale * height, angle)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8), box


def render_rotated_split(seed: int, split: str, size: int, clutter: int = 4) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """``size`` images ``(N, CANVAS, CANVAS)`` uint8 and their boxes, reproducible from ``(seed, split)``."""
    split_id = _SPLIT_IDS.get(split, sum(map(ord, split)))
    images = np.empty((size, CANVAS, CANVAS), dtype=np.uint8)
    boxes = []
    for i in range(size):
        images[i], box = render_rotated_image(np.random.default_rng([seed, split_id, i, 11]), split, clutter)
        boxes.append(box)
    return images, boxes
