"""Small real images for tests, generated so a fresh clone needs no dataset.

Each seed gives a distinct, deterministic JPEG (smooth colour field plus shapes),
enough for the model to give each a stable label.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


def make_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = random.Random(seed)
    w, h = size
    small = Image.new("RGB", (4, 3))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(12)])
    img = small.resize(size, Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(3, 9)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = rng.choice(("ellipse", "rectangle", "line"))
        if shape == "line":
            draw.line((x0, y0, x1, y1), fill=colour, width=rng.randrange(2, 12))
        else:
            getattr(draw, shape)((x0, y0, x1, y1), fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1))


def jpeg_bytes(seed: int, size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    buf = io.BytesIO()
    make_image(seed, size).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def write_images(folder: Path, count: int, *, start: int = 0, prefix: str = "test_") -> list[Path]:
    """Write ``count`` JPEGs named ``<prefix>NN.jpg`` (the course's naming) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"{prefix}{i:02d}.jpg"
        path.write_bytes(jpeg_bytes(i))
        paths.append(path)
    return paths


def truncated_jpeg(seed: int = 0) -> bytes:
    data = jpeg_bytes(seed)
    return data[: len(data) // 3]
