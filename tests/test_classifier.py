"""Decoding odd images and classifying them with the real default model (weights ship offline)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app_tier.classifier import Prediction
from app_tier.models import MODELS, ModelUnavailable, load_classifier, weights_file
from app_tier.preprocess import BadImage, decode_image
from tests.images import jpeg_bytes, make_image, png_bytes, truncated_jpeg


@pytest.fixture(scope="module")
def clf():
    return load_classifier("efficientnet_lite0", device="cpu", threads=1)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def odd_images() -> dict[str, bytes]:
    base = make_image(3)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    palette_t = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    palette_t.info["transparency"] = 0
    grey16 = Image.linear_gradient("L").resize(base.size).convert("I").point(lambda v: v * 257).convert("I;16")
    frames = [make_image(s) for s in (3, 4, 5)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return {
        "cmyk_jpeg": encode(base.convert("CMYK"), "JPEG"),
        "grey16_png": encode(grey16, "PNG"),
        "la_png": encode(rgba.convert("LA"), "PNG"),
        "rgba_png": encode(rgba, "PNG"),
        "palette_transparent_png": encode(palette_t, "PNG"),
        "animated_gif": gif.getvalue(),
        "exif_rotated_jpeg": encode(base, "JPEG", exif=exif.tobytes()),
        "webp": encode(base, "WEBP"),
        "bilevel_png": encode(base.convert("1"), "PNG"),
    }


@pytest.mark.parametrize("kind", sorted(odd_images()))
def test_odd_modes_decode_to_rgb_and_classify(clf, kind):
    img = decode_image(odd_images()[kind])
    assert img.mode == "RGB"
    [pred] = clf.classify([img])
    assert isinstance(pred, Prediction) and pred.label in clf.categories and 0 < pred.score <= 1


def test_exif_orientation_is_applied():
    img = decode_image(odd_images()["exif_rotated_jpeg"])
    assert img.size == (240, 320)  # stored 320x240, displayed rotated


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (50, 40), (255, 0, 0, 0))
    assert decode_image(png_bytes(clear)).getpixel((10, 10)) == (255, 255, 255)


def test_sixteen_bit_grey_keeps_its_range():
    grey16 = Image.linear_gradient("L").resize((64, 64)).convert("I").point(lambda v: v * 257).convert("I;16")
    img = decode_image(png_bytes(grey16))
    from PIL import ImageStat

    lo, hi = img.convert("L").getextrema()
    assert lo < 10 and hi > 245
    assert 100 < ImageStat.Stat(img.convert("L")).mean[0] < 155  # scaled, not clipped to white


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"hello, I am a text file\n", "not an image"),
    (truncated_jpeg(1), "truncated"),
    (jpeg_bytes(1)[:200], "truncated"),
])
def test_bad_bytes_give_a_one_line_reason(data, reason):
    with pytest.raises(BadImage, match=reason) as info:
        decode_image(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("size", [(40, 40), (100, 100)])  # over the limit, and over twice the limit
def test_decompression_bomb_is_refused(monkeypatch, size):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImage, match="too large"):
        decode_image(png_bytes(Image.new("RGB", size)))


def test_large_jpeg_decoded_at_reduced_scale_keeps_the_label(clf):
    data = jpeg_bytes(7, size=(2000, 1500))
    full, reduced = decode_image(data), decode_image(data, min_side=448)
    assert reduced.size[1] >= 448 and reduced.size[0] < full.size[0]
    assert clf.classify([full])[0].label == clf.classify([reduced])[0].label


def test_batch_equals_singles(clf):
    images = [make_image(s) for s in range(4)]
    batch = clf.classify(images)
    assert len(batch) == 4
    assert [p.label for p in batch] == [clf.classify([img])[0].label for img in images]
    assert clf.classify([]) == []


def test_classify_is_deterministic(clf):
    images = [make_image(11), make_image(12)]
    assert clf.classify(images) == clf.classify(images)


def test_torchvision_model_offline_names_the_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name in ("resnet18", "mobilenet_v3_large"):
        with pytest.raises(ModelUnavailable) as info:
            load_classifier(name, download=False)
        assert str(tmp_path) in str(info.value) and ".pth" in str(info.value)
    assert not any(tmp_path.rglob("*.pth"))


def test_unknown_model_lists_the_choices():
    with pytest.raises(ModelUnavailable, match="efficientnet_lite0"):
        load_classifier("no_such_net")
    assert "efficientnet_lite0" in MODELS


def test_weights_file_is_under_torch_home(monkeypatch, tmp_path):
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights_file(ResNet18_Weights.IMAGENET1K_V1) == str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")


@pytest.mark.parametrize(("resize", "size"), [(256, (320, 240)), (256, (97, 400)), (232, (500, 375)), (256, (256, 300))])
def test_transform_matches_torchvision_preset(resize, size):
    from torchvision import transforms as T

    from app_tier.models import IMAGENET_MEAN, IMAGENET_STD, make_transform

    reference = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224),
                           T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    img = make_image(5, size)
    assert (make_transform(resize, 224)(img) - reference(img)).abs().max().item() < 1e-5


def test_frozen_and_eager_models_agree(clf):
    assert clf.frozen
    eager = load_classifier("efficientnet_lite0", device="cpu", freeze=False)
    images = [make_image(s) for s in range(20, 26)]
    assert [p.label for p in clf.classify(images)] == [p.label for p in eager.classify(images)]
