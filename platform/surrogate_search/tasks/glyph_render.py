"""Single characters rendered in the fonts that Pillow and matplotlib ship: one class per character.

Each image shows one of 62 characters (digits, lower and upper case) in a random bundled font, size,
rotation and position, with a stroke of clutter and noise; it is a pure function of ``(seed, split,
index)``. Classes are dealt to train / val / test by the seed, so test classes are never trained on.
"""

from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from surrogate_search.tasks.text_render import _font, font_files

ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase
"""The classes; an embedding model has to tell ``o`` from ``O`` and ``0`` by shape and size alone."""
GLYPH_SIZE = 32
SPLIT_CLASSES = {"train": 36, "val": 10, "test": 16}
"""How many of the 62 classes each split gets (disjoint)."""
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def split_classes(seed: int) -> dict[str, list[str]]:
    """The characters of each split: a seeded deal of :data:`ALPHABET`, disjoint across splits."""
    order = np.random.default_rng([seed, 404]).permutation(len(ALPHABET))
    chars, start, out = [ALPHABET[i] for i in order], 0, {}
    for split, count in SPLIT_CLASSES.items():
        out[split] = sorted(chars[start:start + count])
        start += count
    return out


def render_glyph(char: str, rng: np.random.Generator) -> np.ndarray:
    """One ``GLYPH_SIZE x GLYPH_SIZE`` uint8 image of ``char``."""
    fonts = font_files()
    font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(16, 27)))
    background = int(rng.integers(0, 256))
    sign = 1 if background < 128 else -1
    foreground = int(np.clip(background + sign * rng.integers(70, 200), 0, 255))

    side = 2 * GLYPH_SIZE  # drawn large and cropped, so that rotation never cuts the glyph
    canvas = Image.new("L", (side, side), color=background)
    draw = ImageDraw.Draw(canvas)
    shade = int(np.clip(background + rng.normal(0, 50), 0, 255))
    xy = [(int(v) for v in rng.integers(side // 4, 3 * side // 4, size=2)) for _ in range(2)]
    draw.line([tuple(p) for p in xy], fill=shade, width=int(rng.integers(1, 3)))
    centre = side / 2 + rng.uniform(-4, 4, size=2)
    draw.text(tuple(centre), char, font=font, fill=foreground, anchor="mm")
    canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, fillcolor=background)
    offset = (side - GLYPH_SIZE) // 2
    glyph = canvas.crop((offset, offset, offset + GLYPH_SIZE, offset + GLYPH_SIZE))
    if rng.random() < 0.5:
        glyph = glyph.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    image = np.asarray(glyph, dtype=np.float32) + rng.normal(0, rng.uniform(0, 15), size=(GLYPH_SIZE, GLYPH_SIZE))
    return np.clip(image, 0, 255).astype(np.uint8)


def render_glyph_split(seed: int, split: str, per_class: int) -> tuple[np.ndarray, list[str]]:
    """``per_class`` images of each of the split's classes, class by class, and their characters."""
    chars = split_classes(seed)[split]
    images = np.empty((len(chars) * per_class, GLYPH_SIZE, GLYPH_SIZE), dtype=np.uint8)
    labels = []
    for c, char in enumerate(chars):
        for i in range(per_class):
            images[c * per_class + i] = render_glyph(char, np.random.default_rng([seed, _SPLIT_IDS[split], ord(char), i]))
            labels.append(char)
    return images, labels
