"""Bytes from the input bucket -> an upright RGB PIL image, or a one-line reason why not.

Uploads come from anyone, so every odd case ends either in an RGB image the model
can read or in ``BadImage``: zero bytes, not an image, truncated data, decompression
bombs (``PIL.Image.MAX_IMAGE_PIXELS`` stays the guard), CMYK, 16-bit greyscale,
palettes and alpha (composited on white, as a viewer shows them), animations (first
frame), EXIF rotation.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255)


class BadImage(ValueError):
    """The bytes are not a usable image; the message is a one-line reason for the result."""


def decode_image(data: bytes, *, min_side: int | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image with EXIF orientation applied.

    ``min_side``: a JPEG may be decoded at a reduced DCT scale as long as its shorter
    side stays at least this long (large photos decode several times faster; the
    model resizes them much smaller anyway).
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        # Image.open itself refuses over twice the limit; _check_size refuses the rest
        # (a warnings filter would do it too, but filters are process-global, not thread-safe).
        img = Image.open(io.BytesIO(data))
        _check_size(img)
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if min_side and img.format == "JPEG":
            w, h = img.size
            scale = min(w, h) / min_side
            if scale >= 2:
                img.draft(img.mode, (int(w / scale) + 1, int(h / scale) + 1))
        img.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as err:
        raise BadImage(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImage(f"corrupt or truncated image: {err}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good image
        pass
    return to_rgb(img)


def _check_size(img: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if limit and w * h > limit:
        raise BadImage(f"image too large: {w}x{h} pixels is over the {limit} pixel limit")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in _ALPHA_MODES:
        img = img.convert("RGBA")
    elif mode.startswith("I") or mode == "F":
        img = _wide_grey_to_l(img)
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, _WHITE)
        background.paste(img, mask=img.getchannel("A"))
        return background
    try:
        return img.convert("RGB")
    except ValueError as err:
        raise BadImage(f"unsupported colour mode {mode}: {err}") from None


def _wide_grey_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit or float greyscale -> 8-bit, scaled rather than clipped (clipping whites out the picture)."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        top = 65535.0
    else:
        peak = float(arr.max()) if arr.size else 0.0
        top = 1.0 if img.mode == "F" and peak <= 1.0 else 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    scaled = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """Bilinear resize of the short side to ``resize``, then a centre ``crop`` square: torchvision's
    Resize(resize) + CenterCrop(crop) on a PIL image, same rounding."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def to_input(img: Image.Image, resize: int, crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """An RGB image -> the model's 3 x crop x crop float32 input, without torch.

    Same arithmetic, in the same float32 order, as ToTensor + Normalize (tested equal to
    torchvision's preset within 1e-6; the target is 1e-4).
    """
    pixels = np.asarray(resize_crop(img.convert("RGB") if img.mode != "RGB" else img, resize, crop), dtype=np.uint8)
    chw = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    chw -= np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    chw /= np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return chw
