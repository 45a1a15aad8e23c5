"""Image and mask I/O: conversions, refusals, binarization, padding, exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cicm_deploy.images import (ImageError, as_mask_array, as_rgb_array, check_same_size, crop, from_nchw,
                                load_image, load_mask, pad_to_multiple, save_image, save_mask, to_nchw)


def write(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_rgb_round_trip(tmp_path, photo):
    path = save_image(tmp_path / "a.png", photo)
    assert np.array_equal(load_image(path), photo)


def test_grayscale_is_converted(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = load_image(write(tmp_path, "g.png", Image.fromarray(gray, "L")))
    assert rgb.shape == (3, 4, 3) and np.array_equal(rgb[..., 1], gray)


def test_palette_is_converted(tmp_path, photo):
    pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rgb = load_image(write(tmp_path, "p.png", pal))
    assert np.array_equal(rgb, np.asarray(pal.convert("RGB")))


def test_cmyk_is_converted(tmp_path, photo):
    cmyk = Image.fromarray(photo).convert("CMYK")
    rgb = load_image(write(tmp_path, "c.jpg", cmyk))
    assert rgb.shape == photo.shape and rgb.dtype == np.uint8


def test_sixteen_bit_gray_is_scaled(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    img = Image.fromarray(values)
    path = write(tmp_path, "s.png", img)
    assert Image.open(path).mode.startswith("I")
    assert load_image(path)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_opaque_rgba_is_accepted_transparent_refused(tmp_path, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    assert np.array_equal(load_image(write(tmp_path, "o.png", Image.fromarray(rgba, "RGBA"))), photo)
    rgba[0, 0, 3] = 10
    with pytest.raises(ImageError, match=r"has transparency \(RGBA, 1 pixel not opaque\).*flatten it"):
        load_image(write(tmp_path, "t.png", Image.fromarray(rgba, "RGBA")))


def test_float_image_is_refused(tmp_path):
    path = write(tmp_path, "f.tif", Image.fromarray(np.zeros((2, 2), np.float32), "F"))
    with pytest.raises(ImageError, match="has mode F"):
        load_image(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageError, match="image .*missing.png does not exist"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="is not a readable image"):
        load_mask(bad)


def test_mask_binarization_threshold_and_invert(tmp_path):
    values = np.array([[0, 127, 128, 255]], np.uint8)
    path = write(tmp_path, "m.png", Image.fromarray(values, "L"))
    assert load_mask(path).tolist() == [[False, False, True, True]]
    assert load_mask(path, invert=True).tolist() == [[True, True, False, False]]


def test_colour_and_16bit_masks_use_luminance(tmp_path):
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1] = (255, 255, 255)
    rgb[0, 2] = (255, 0, 0)  # luminance 76: not a hole
    assert load_mask(write(tmp_path, "c.png", Image.fromarray(rgb))).tolist() == [[False, True, False]]
    sixteen = Image.fromarray(np.array([[0, 65535]], np.uint16))
    assert load_mask(write(tmp_path, "s.png", sixteen)).tolist() == [[False, True]]


def test_in_memory_arrays():
    assert as_mask_array(np.array([[True, False]])).tolist() == [[True, False]]
    assert as_mask_array(np.array([[255, 0]], np.uint8)).tolist() == [[True, False]]
    with pytest.raises(ImageError, match="dtype float64"):
        as_mask_array(np.zeros((2, 2)))
    with pytest.raises(ImageError, match=r"shape \[2, 2, 2\]"):
        as_rgb_array(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ImageError, match="dtype float32"):
        as_rgb_array(np.zeros((2, 2, 3), np.float32))
    assert as_rgb_array(np.zeros((2, 2), np.uint8)).shape == (2, 2, 3)
    for shape in [(0, 0), (0, 5), (3, 0)]:  # no pixels: named, never handed back as an empty frame
        with pytest.raises(ImageError, match=rf"image is {shape[1]}x{shape[0]} \(width x height\): it has no pixels"):
            as_rgb_array(np.zeros((*shape, 4), np.uint8))  # RGBA: no reduction over an empty alpha either
        with pytest.raises(ImageError, match=rf"mask is {shape[1]}x{shape[0]} .*: it has no pixels"):
            as_mask_array(np.zeros(shape, np.uint8))


def test_size_mismatch_names_both_sizes(photo):
    with pytest.raises(ImageError, match="image is 61x45 but mask is 60x45"):
        check_same_size(photo, np.zeros((45, 60), bool))


@pytest.mark.parametrize("height,width", [(45, 61), (1, 1), (1, 9), (3, 2), (16, 8)])
def test_pad_and_crop_round_trip(height, width, rng):
    array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    padded = pad_to_multiple(array, 8)
    assert padded.shape[0] % 8 == 0 and padded.shape[1] % 8 == 0
    assert np.array_equal(crop(padded, height, width), array)


def test_reflect_padding():
    row = np.arange(5, dtype=np.uint8)[None, :, None]
    assert pad_to_multiple(np.repeat(row, 2, axis=0), 8)[0, :, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]


def test_uint8_float_round_trip_is_exact():
    values = np.arange(256, dtype=np.uint8)
    image = np.stack([values] * 3, axis=1)[None]  # [1, 256, 3]
    x, _ = to_nchw(image, np.zeros((1, 256), bool))
    assert np.array_equal(from_nchw(x), image)


def test_save_mask_and_unknown_suffix(tmp_path):
    mask = np.array([[True, False]])
    assert load_mask(save_mask(tmp_path / "m.png", mask)).tolist() == [[True, False]]
    with pytest.raises(ImageError, match="unknown suffix '.xyz'"):
        save_image(tmp_path / "a.xyz", np.zeros((2, 2, 3), np.uint8))
