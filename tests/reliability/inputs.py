"""Hostile and unusual uploads, built here from tests/images.py and Pillow (no dataset).

``valid_images``, ``bad_files`` and ``HOSTILE_NAMES`` list the kinds with what they must get; ``stream_upload``
sends a huge body over a raw socket and counts the bytes that left before the refusal.
"""

from __future__ import annotations

import io
import select
import socket
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.images import jpeg_bytes, make_image, png_bytes, truncated_jpeg


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_of_zeros(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A real 8-bit greyscale PNG of ``width`` x ``height`` black pixels, compressed ~1000:1 (a pixel bomb).

    ``rows`` < height writes only that many rows (a header that promises more than the data holds)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [comp.compress(row) for _ in range(height if rows is None else rows)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def valid_images() -> dict[str, tuple[str, bytes]]:
    """Unusual but valid images: each must be classified. kind -> (file name, bytes)."""
    base = make_image(7, (200, 150))
    grey16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    frames = [make_image(s, (120, 90)).convert("P") for s in (1, 2, 3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    return {
        "CMYK JPEG": ("cmyk.jpg", _save(base.convert("CMYK"), "JPEG")),
        "16-bit greyscale PNG": ("grey16.png", png_bytes(grey16)),
        "animated GIF (3 frames)": ("anim.gif", gif.getvalue()),
        "transparent PNG (RGBA)": ("alpha.png", png_bytes(rgba)),
        "palette PNG": ("palette.png", png_bytes(base.convert("P"))),
        "greyscale JPEG": ("grey.jpg", _save(base.convert("L"), "JPEG")),
        "1x1 pixel PNG": ("tiny.png", png_bytes(Image.new("RGB", (1, 1), (200, 10, 10)))),
        "extension lies (PNG named .jpg)": ("lies.jpg", png_bytes(base)),
        "HTML in the file name": ("<img src=x onerror=alert(1)>.jpg", jpeg_bytes(8)),
    }


def bad_files() -> dict[str, tuple[str, bytes, set[int]]]:
    """Files that must be refused: kind -> (file name, bytes, acceptable 4xx)."""
    big = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 - 2)  # limit + 1 byte, inside the multipart slack
    return {
        "text with an image name": ("notes.jpg", b"hello, I am not a picture\n" * 40, {415}),
        "HTML/SVG with an image name": ("x.png", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)"
                                                b"</script></svg>", {415}),
        "PNG signature then garbage": ("sig.png", b"\x89PNG\r\n\x1a\n" + b"\x13" * 500, {415}),
        "executable with an image name": ("mz.jpg", b"MZ\x90\0" + bytes(range(256)) * 8, {415}),
        "zero bytes": ("empty.jpg", b"", {400}),
        "file 1 byte over the limit": ("big.jpg", big, {413}),
        "decompression bomb (20000x20000 PNG, 0.4 MB)": ("bomb.png", png_of_zeros(20000, 20000), {413}),
        "huge dimensions (65535x65535 header)": ("huge.png", png_of_zeros(65535, 65535, rows=2), {413}),
        "just over the pixel limit (10000x9000)": ("over.png", png_of_zeros(10000, 9000), {413}),
    }


def maybe_bad_files() -> dict[str, tuple[str, bytes]]:
    """Damaged but partly decodable: refused (415) or answered with a clear per-image error."""
    return {"truncated JPEG": ("cut.jpg", truncated_jpeg(3))}


HOSTILE_NAMES = {
    "path traversal name": "../../etc/passwd.jpg",
    "absolute path name": "/tmp/x.jpg",
    # Backslashes doubled: multipart quoted-strings unescape them, so the server sees single ones.
    "Windows path name": "C:\\\\Windows\\\\x.jpg",
    "control characters in name": "a\x07b\x1b[31m.jpg",
    "CR LF in name (header injection)": "a\r\nX-Evil: 1.jpg",
    "bidi override in a Unicode name": "caf\u00e9\u202e.jpg",  # café alone is accepted
    "300-character name": "n" * 296 + ".jpg",
    "name of dots only": "....",
    "empty file name with data": "",
}


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und4ry") -> tuple[bytes, str]:
    """A raw multipart body: (field, filename or None, data) per part; names are written byte for byte."""
    out = io.BytesIO()
    for fieldname, filename, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disp = f'Content-Disposition: form-data; name="{fieldname}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out.write(disp.encode("utf-8", "surrogateescape") + b"\r\n")
        if filename is not None:
            out.write(b"Content-Type: application/octet-stream\r\n")
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Streamed:
    status: int
    sent: int  # body bytes that left this process before the server answered or closed
    reason: str


def stream_upload(host: str, port: int, path: str, *, total: int, chunked: bool, chunk: int = 64 * 1024) -> Streamed:
    """POST a ``total``-byte file (never built in memory) and stop as soon as the server answers."""
    boundary = "streamb0undary"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n") + "\r\n")
    preamble = (f'--{boundary}\r\nContent-Disposition: form-data; name="myfile"; filename="huge.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode()
    block = b"\xff" * chunk
    sent = 0
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(head.encode())
        while sent < total:
            if select.select([s], [], [], 0)[0]:  # the server has answered (or closed): stop sending
                break
            data = preamble + block if sent == 0 else block
            frame = b"%x\r\n%s\r\n" % (len(data), data) if chunked else data
            try:
                s.sendall(frame)
            except OSError:
                break
            sent += len(data)
        resp = b""
        try:
            while b"\r\n\r\n" not in resp or len(resp.split(b"\r\n\r\n", 1)[1]) < 10:
                more = s.recv(65536)
                if not more:
                    break
                resp += more
        except OSError:
            pass
    status = int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else 0
    reason = resp.split(b"\r\n\r\n", 1)[1][:200].decode(errors="replace") if b"\r\n\r\n" in resp else ""
    return Streamed(status, sent, reason)
