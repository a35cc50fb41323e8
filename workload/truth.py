"""Ground truth: which ImageNet class each image should get.

Two formats are read. The course's prediction files are a CSV of image name and
expected label, with a header (``Image,Results``) or without one, and the names
may or may not carry the extension. The shared ImageNet sample's ``labels.csv``
has a header ``file,class_index,wnid,label``. Either way the result maps an image
*stem* (name without its image extension) to its exact class name.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from workload.model import WorkloadError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
NAME_COLUMNS = ("image", "file", "filename", "file_name", "image_name", "name")
LABEL_COLUMNS = ("label", "results", "result", "prediction", "class", "class_name", "expected")
MAX_TRUTH_BYTES = 64 * 1024 * 1024


def image_stem(name: str) -> str:
    """``test_00.JPEG`` and ``test_00`` are the same image; other dots stay (``a.b`` is a stem)."""
    name = os.path.basename(name.strip())
    root, ext = os.path.splitext(name)
    return root if ext.lower() in IMAGE_EXTENSIONS and root else name


def load_truth(path: Path | str) -> dict[str, str]:
    """Read a prediction file into ``{stem: label}``; any problem is a one-line ``WorkloadError``."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"prediction file {path} does not exist or is not a file")
    if path.stat().st_size > MAX_TRUTH_BYTES:
        raise WorkloadError(f"prediction file {path} is larger than {MAX_TRUTH_BYTES // 2**20} MiB")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise WorkloadError(f"prediction file {path} is not UTF-8 text (expected a CSV of image,label)") from None
    except OSError as err:
        raise WorkloadError(f"cannot read prediction file {path}: {err.strerror}") from None
    return parse_truth(text, str(path))


def parse_truth(text: str, source: str = "prediction file") -> dict[str, str]:
    if "\x00" in text:
        raise WorkloadError(f"{source} is binary, not a CSV of image,label")
    try:
        rows = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), start=1)
                if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise WorkloadError(f"{source} is not valid CSV: {err}") from None
    if not rows:
        raise WorkloadError(f"{source} is empty (expected lines of image,label)")
    name_col, label_col, rows = _columns(rows, source)
    truth: dict[str, str] = {}
    for line, row in rows:
        if max(name_col, label_col) >= len(row):
            raise WorkloadError(f"{source} line {line}: expected {max(name_col, label_col) + 1} columns, "
                                f"got {len(row)}: {','.join(row)[:80]!r}")
        name, label = row[name_col].strip(), row[label_col].strip()
        if not name or not label:
            raise WorkloadError(f"{source} line {line}: empty image name or label")
        stem = image_stem(name)
        if truth.get(stem, label) != label:
            raise WorkloadError(f"{source} line {line}: {stem} is listed twice with different labels "
                                f"({truth[stem]!r} and {label!r})")
        truth[stem] = label
    if not truth:
        raise WorkloadError(f"{source} has a header but no entries")
    log.debug("loaded %s expected labels from %s", len(truth), source)
    return truth


def _columns(rows: list[tuple[int, list[str]]], source: str):
    """(name column, label column, data rows): from the header if there is one, else the first two columns."""
    header = [cell.strip().lower() for cell in rows[0][1]]
    if any(cell in NAME_COLUMNS for cell in header):
        name_col = next(header.index(c) for c in NAME_COLUMNS if c in header)
        label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
        if label_col is None:
            raise WorkloadError(f"{source}: header {','.join(rows[0][1])!r} has no label column "
                                f"(one of {', '.join(LABEL_COLUMNS)})")
        return name_col, label_col, rows[1:]
    for line, row in rows:
        if len(row) != 2:
            raise WorkloadError(f"{source} line {line}: expected 2 columns (image,label), got {len(row)}: "
                                f"{','.join(row)[:80]!r}")
    return 0, 1, rows
