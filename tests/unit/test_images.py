"""Decoding and normalisation of single image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data import images
from tasks.data.images import BadImage, decode_image


def _png(path: Path, img: Image.Image) -> Path:
    img.save(path)
    return path


def test_grayscale_is_resized_to_one_channel(tmp_path: Path) -> None:
    path = _png(tmp_path / "g.png", Image.fromarray(np.full((20, 30), 200, np.uint8), mode="L"))
    out = decode_image(path, 8, 1)[0]
    assert out.shape == (1, 8, 8) and out.dtype == np.uint8
    assert np.all(out == 200)


def test_rgb_to_three_channels_keeps_colour_order(tmp_path: Path) -> None:
    pixels = np.zeros((10, 10, 3), np.uint8)
    pixels[..., 0] = 255  # pure red
    out = decode_image(_png(tmp_path / "c.png", Image.fromarray(pixels, mode="RGB")), 4, 3)[0]
    assert out.shape == (3, 4, 4)
    assert np.all(out[0] == 255) and np.all(out[1:] == 0)


def test_rgba_transparency_becomes_black(tmp_path: Path) -> None:
    pixels = np.zeros((6, 6, 4), np.uint8)
    pixels[..., :3] = 255
    pixels[:3, :, 3] = 255  # top half opaque white, bottom half transparent white
    out = decode_image(_png(tmp_path / "t.png", Image.fromarray(pixels, mode="RGBA")), 6, 1)[0]
    assert np.all(out[0, :2] == 255)
    assert np.all(out[0, 4:] == 0)


def test_palette_image_is_decoded_through_its_palette(tmp_path: Path) -> None:
    img = Image.new("P", (5, 5), 1)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)  # index 1 = green
    out = decode_image(_png(tmp_path / "p.png", img), 5, 3)[0]
    assert np.all(out[1] == 255) and np.all(out[0] == 0) and np.all(out[2] == 0)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    out = decode_image(_png(tmp_path / "w.png", img), 4, 1)[0]
    assert np.all(out == 255)


def test_jpeg_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "j.jpg"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(path, quality=95)
    assert decode_image(path, 8, 3)[0].shape == (3, 8, 8)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "zero-byte"),
        (lambda p: p.write_text("hello, not a picture"), "not an image"),
        (lambda p: p.write_bytes(_valid_png_bytes()[:60]), "truncated"),
        (lambda p: p.write_bytes(_corrupt_png_bytes()), "corrupt"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: os.symlink(p.parent / "missing-target.png", p), "unreadable"),
    ],
    ids=["zero-byte", "non-image", "truncated", "corrupt", "directory", "dangling-link"],
)
@pytest.mark.parametrize("read_whole", [True, False], ids=["read-whole", "opened-by-pil"])
def test_bad_files_raise_with_their_reason(tmp_path: Path, make, reason: str, read_whole: bool, monkeypatch) -> None:
    # Small files are read whole, large ones opened by PIL: both give the same reasons.
    monkeypatch.setattr(images, "READ_WHOLE_BYTES", images.READ_WHOLE_BYTES if read_whole else 0)
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(BadImage) as info:
        decode_image(path, 8, 1)
    assert reason in info.value.reason


def test_a_file_read_whole_and_one_opened_by_pil_give_the_same_pixels(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path, quality=80)
    whole = decode_image(path, 32, 3)
    monkeypatch.setattr(images, "READ_WHOLE_BYTES", 0)
    opened = decode_image(path, 32, 3)
    assert whole[1] == opened[1] == (70, 50) and np.array_equal(whole[0], opened[0])


def _valid_png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _corrupt_png_bytes() -> bytes:
    data = bytearray(_valid_png_bytes())
    # Scramble the compressed pixel data in the middle while keeping the header intact.
    for i in range(100, len(data) - 30):
        data[i] ^= 0x5A
    return bytes(data)


def test_the_image_contract_reads_files_as_training_did_and_names_each_unusable_one(tmp_path: Path) -> None:
    from tasks.data.contract import ImageInput

    contract = ImageInput(channels=1, image_size=8)
    good = _png(tmp_path / "g.png", Image.fromarray(np.full((20, 30), 200, np.uint8), mode="L"))
    (tmp_path / "empty.png").write_bytes(b"")
    decoded = contract.read([tmp_path / "empty.png", good, tmp_path / "missing.png"])
    assert decoded.source == [1] and [i for i, _ in decoded.failures] == [0, 2]
    assert "zero-byte" in decoded.failures[0][1] and "unreadable" in decoded.failures[1][1]
    np.testing.assert_array_equal(decoded.raw[0], decode_image(good, 8, 1)[0])
    assert decoded.meta.to_dict("records") == [{"original_width": 30, "original_height": 20}]
    inputs = contract.to_model_input(decoded.raw)
    assert inputs.dtype == np.float32 and inputs.shape == (1, 1, 8, 8) and np.allclose(inputs, 200 / 255)
    stats = contract.statistics(decoded.raw, decoded.meta)
    assert list(stats.columns) == contract.statistic_columns and stats["aspect"].iloc[0] == 1.5
    assert contract.describe().startswith("1 channel(s) (L), 8x8 pixels (bilinear resize)")
    unseen, note = contract.unfamiliar(stats, stats.assign(original_width=8.0))
    assert unseen == 1 and "never seen in training data" in note
    nothing = contract.read([])
    assert nothing.raw.shape == (0, 1, 8, 8) and nothing.meta.empty


def test_the_image_contract_refuses_what_it_cannot_honour() -> None:
    from pydantic import ValidationError

    from tasks.data.contract import ImageInput

    assert ImageInput(channels=3, image_size=32).colour == "RGB"
    with pytest.raises(ValidationError, match="does not fit channels=1"):
        ImageInput(channels=1, image_size=8, colour="RGB")
    with pytest.raises(ValidationError, match="resize"):
        ImageInput(channels=1, image_size=8, resize="bicubic")
