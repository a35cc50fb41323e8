"""Web-tier parts on their own: upload checks, the router (no server needed); the job store is in test_jobstore.py."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import pytest

from infra.messages import ImageResult
from tests.images import jpeg_bytes, make_image, png_bytes
from web_tier.dispatcher import Router
from web_tier.intake import Rejected, check_upload, read_bounded, sniff_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but has no pixels: how a decompression bomb starts."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_real_images_pass_with_their_format():
    assert sniff_image(jpeg_bytes(1)) == "JPEG"
    assert sniff_image(png_bytes(make_image(1, (64, 64)))) == "PNG"
    up = check_upload("my photo (1).jpg", jpeg_bytes(1), 10_000_000)
    assert up.key == "my photo _1_.jpg" and up.name == "my photo (1).jpg"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("w,h", [(10_000, 10_000), (30_000, 30_000)])
def test_pixel_bombs_are_refused(w, h):
    with pytest.raises(Rejected) as err:
        sniff_image(png_header_only(w, h))
    assert err.value.status == 413 and "pixels" in err.value.reason


def test_read_bounded_stops_one_byte_past_the_limit():
    assert read_bounded(io.BytesIO(b"x" * 100), 100) == b"x" * 100
    stream = io.BytesIO(b"x" * 10_000_000)
    with pytest.raises(Rejected) as err:
        read_bounded(stream, 100)
    assert err.value.status == 413 and stream.tell() == 101


def test_router_wakes_every_watcher_of_an_id_and_no_other():
    router = Router()
    result = ImageResult("a", "a.jpg", label="x")
    with router.watch(["a"]) as w1, router.watch(["a", "b"]) as w2, router.watch(["b"]) as w3:
        assert router.waiting == 2
        assert router.deliver(result) == 2
        assert w1.event.is_set() and w2.event.is_set() and not w3.event.is_set()
        assert w1.results == {"a": result} and w2.results == {"a": result} and w3.results == {}
    assert router.waiting == 0 and router.deliver(result) == 0


def test_router_under_concurrent_watchers():
    router = Router()
    got = {}

    def wait_for(i):
        with router.watch([f"id{i}"]) as w:
            ready.wait()
            w.event.wait(10)
            got[i] = w.results[f"id{i}"].label

    ready = threading.Event()
    threads = [threading.Thread(target=wait_for, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    while router.waiting < 50:
        pass
    ready.set()
    for i in reversed(range(50)):
        router.deliver(ImageResult(f"id{i}", f"{i}.jpg", label=f"label{i}"))
    for t in threads:
        t.join(10)
    assert got == {i: f"label{i}" for i in range(50)}


def test_expected_ids_expire_with_their_requests_timeout():
    """1000 requests whose results land elsewhere (or never): the set of ids a clean stop waits for empties
    once their timeout has passed, and what the router holds for it stays bounded."""
    now = [0.0]
    router = Router(ttl_s=30.0, clock=lambda: now[0])
    for i in range(1000):
        router.expect(f"lost{i}")
        now[0] += 0.01
    assert router.outstanding == 1000
    router.deliver(ImageResult("lost5", "5.jpg", label="x"))  # one answered here
    assert router.outstanding == 999
    now[0] += 30.0
    assert router.outstanding == 0 and router.tracked == 0
    for i in range(5000):  # a long run of answered requests leaves nothing behind either
        router.expect(f"ok{i}")
        router.deliver(ImageResult(f"ok{i}", "a.jpg", label="x"))
    assert router.outstanding == 0 and router.tracked < 200
