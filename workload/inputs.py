"""What to send and where: the image folder, the request list, and the target URL.

Everything here runs before the first request, so bad input stops the run with a
one-line ``WorkloadError`` instead of failing a hundred threads later.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import requests

from workload.model import Target, WorkloadError
from workload.truth import image_stem

log = logging.getLogger(__name__)

# Leading bytes of the formats the web tier accepts; a ``.jpg`` that is really text is not an image.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def is_image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def scan_folder(folder: Path | str) -> tuple[list[Path], list[str]]:
    """(images sorted by name, names of skipped non-image files). Hidden files are ignored quietly."""
    folder = Path(folder)
    if not folder.exists():
        raise WorkloadError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise WorkloadError(f"image folder {folder} is not a folder")
    images, skipped = [], []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.is_dir():
            continue
        (images if path.is_file() and is_image(path) else skipped).append(path)
    if not images:
        what = f"only non-image files ({_names(skipped)})" if skipped else "no files"
        raise WorkloadError(f"image folder {folder} has no images: {what}")
    if skipped:
        log.warning("skipping %s non-image file(s) in %s: %s", len(skipped), folder, _names(skipped))
    return images, [p.name for p in skipped]


def _names(paths: list[Path], most: int = 5) -> str:
    names = ", ".join(p.name for p in paths[:most])
    return names + (f" and {len(paths) - most} more" if len(paths) > most else "")


def plan_targets(images: list[Path], num_request: int | None, repeat: bool,
                 truth: dict[str, str] | None) -> list[Target]:
    """The ordered requests: the first ``num_request`` images, cycling through the folder with ``repeat``."""
    count = len(images) if num_request is None else num_request
    if count < 1:
        raise WorkloadError(f"--num_request must be at least 1, got {count}")
    if count > len(images) and not repeat:
        raise WorkloadError(f"--num_request {count} but the folder has only {len(images)} images; "
                            f"pass --repeat to cycle through them")
    targets = []
    for i in range(count):
        path = images[i % len(images)]
        stem = image_stem(path.name)
        targets.append(Target(i, path, path.name, stem, truth.get(stem) if truth else None))
    if truth:
        missing = sorted({t.stem for t in targets if t.expected is None})
        if missing:
            log.warning("%s image(s) are not in the prediction file and will not be judged: %s",
                        len(missing), ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    return targets


def normalize_url(url: str) -> str:
    """Accept ``host:port``, ``http://host:port`` or ``http://host:port/``; POST goes to the path given, else ``/``."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WorkloadError(f"--url {url!r} is not an http(s) URL like http://127.0.0.1:8000")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise WorkloadError(f"--url {url!r} has an invalid port") from None
    return url if parts.path else url + "/"


def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """One GET up front: any HTTP answer will do; no answer at all stops the run."""
    try:
        requests.get(url, timeout=timeout_s).close()
    except requests.exceptions.Timeout:
        raise WorkloadError(f"cannot reach {url}: no answer within {timeout_s:.0f} s") from None
    except requests.exceptions.RequestException as err:
        raise WorkloadError(f"cannot reach {url}: {short_reason(err)}; is the web tier running?") from None


def short_reason(err: BaseException) -> str:
    """A one-line cause from requests' nested connection errors."""
    text = str(err)
    for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "No route to host", "Connection reset by peer", "Remote end closed connection",
                   "Network is unreachable", "nodename nor servname"):
        if marker in text:
            return marker.lower()
    return type(err).__name__
