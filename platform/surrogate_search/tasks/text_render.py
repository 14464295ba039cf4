"""Scene-text-like word images rendered on the fly with fonts that Pillow and matplotlib ship.

Nothing is downloaded: glyphs come from matplotlib's bundled DejaVu, STIX and Computer Modern
TrueType files and Pillow's bundled default font. Every image is a pure function of
``(seed, split, index)``, so splits are reproducible and can be rendered in any order.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CHARSET = string.digits + string.ascii_lowercase
"""Recognised characters; labels are lower-case, as in the usual case-insensitive STR protocol."""

MAX_LABEL_LENGTH = 12
IMAGE_HEIGHT = 24
IMAGE_WIDTH = 96

_MPL_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)
_PILLOW_DEFAULT = "<pillow-default>"


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """The bundled fonts used for rendering (paths, plus Pillow's default font)."""
    import matplotlib  # only for its font folder: imported when rendering, not with the task registry

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = tuple(str(folder / name) for name in _MPL_FONTS if (folder / name).exists())
    return (*found, _PILLOW_DEFAULT)


@functools.lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    if path == _PILLOW_DEFAULT:
        return ImageFont.load_default(size=size)  # type: ignore[return-value]
    return ImageFont.truetype(path, size=size)


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    text = resources.files("surrogate_search.tasks").joinpath("words.txt").read_text(encoding="utf-8")
    words = {w for line in text.splitlines() if not line.startswith("#") for w in line.split()}
    return tuple(sorted(w for w in words if 1 <= len(w) <= MAX_LABEL_LENGTH and set(w) <= set(CHARSET)))


@dataclass(frozen=True)
class RenderOptions:
    """How hard the images are. The defaults give a CRNN a few percent character error."""

    random_string_fraction: float = 0.3
    max_rotation_degrees: float = 3.0
    max_blur_radius: float = 0.8
    max_noise_std: float = 12.0
    clutter_lines: int = 2
    min_contrast: int = 60


def sample_label(rng: np.random.Generator, options: RenderOptions) -> str:
    if rng.random() < options.random_string_fraction:
        length = int(rng.integers(1, MAX_LABEL_LENGTH + 1))
        return "".join(rng.choice(list(CHARSET), size=length))
    words = vocabulary()
    return words[int(rng.integers(len(words)))]


def render_word(label: str, rng: np.random.Generator, options: RenderOptions = RenderOptions()) -> np.ndarray:
    """One grey-scale ``IMAGE_HEIGHT x IMAGE_WIDTH`` uint8 image showing ``label``."""
    shown = {0: label, 1: label.upper(), 2: label.capitalize()}[int(rng.integers(3))]
    fonts = font_files()
    font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(22, 34)))

    background = int(rng.integers(0, 256))
    sign = 1 if background < 128 else -1
    foreground = int(np.clip(background + sign * rng.integers(options.min_contrast, 200), 0, 255))

    left, top, right, bottom = font.getbbox(shown)
    pad = int(rng.integers(2, 10))
    canvas = Image.new("L", (right - left + 2 * pad, max(bottom - top, 1) + 2 * pad), color=background)
    draw = ImageDraw.Draw(canvas)
    # Clutter behind the text: lines and a gradient of a different grey.
    width, height = canvas.size
    for _ in range(int(rng.integers(0, options.clutter_lines + 1))):
        shade = int(np.clip(background + rng.normal(0, 40), 0, 255))
        xy = [(int(rng.integers(width)), int(rng.integers(height))) for _ in range(2)]
        draw.line(xy, fill=shade, width=int(rng.integers(1, 3)))
    draw.text((pad - left, pad - top), shown, font=font, fill=foreground)

    angle = float(rng.uniform(-options.max_rotation_degrees, options.max_rotation_degrees))
    canvas = canvas.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=background)

    # Fit into the fixed frame, keeping the aspect ratio where the word is short.
    scale = min(IMAGE_HEIGHT / canvas.height, IMAGE_WIDTH / canvas.width)
    new_w = max(1, min(IMAGE_WIDTH, round(canvas.width * scale * rng.uniform(0.85, 1.0))))
    new_h = max(1, min(IMAGE_HEIGHT, round(canvas.height * scale)))
    canvas = canvas.resize((new_w, new_h), Image.BILINEAR)
    frame = Image.new("L", (IMAGE_WIDTH, IMAGE_HEIGHT), color=background)
    frame.paste(canvas, (int(rng.integers(0, IMAGE_WIDTH - new_w + 1)), (IMAGE_HEIGHT - new_h) // 2))

    radius = float(rng.uniform(0, options.max_blur_radius))
    if radius > 0.2:
        frame = frame.filter(ImageFilter.GaussianBlur(radius))
    image = np.asarray(frame, dtype=np.float32)
    image += rng.normal(0, rng.uniform(0, options.max_noise_std), size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_split(seed: int, split: str, size: int, options: RenderOptions = RenderOptions(), *,
                 epoch: int = 0) -> tuple[np.ndarray, list[str]]:
    """``size`` images (N, H, W) uint8 and their labels, reproducible from ``(seed, split)``;
    ``epoch`` > 0 draws another set from a stream of its own (fresh training images per epoch)."""
    split_id = {"train": 0, "val": 1, "test": 2}.get(split, sum(map(ord, split)))
    images = np.empty((size, IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
    labels: list[str] = []
    for i in range(size):
        rng = np.random.default_rng([seed, split_id, i] if epoch == 0 else [seed, split_id, i, epoch])
        label = sample_label(rng, options)
        images[i] = render_word(label, rng, options)
        labels.append(label)
    return images, labels
