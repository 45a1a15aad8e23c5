"""The folder dataset (split, crops, bad files, errors) and the photo filter and deduplication."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from cicm_deploy import CICMWarning
from cicm_deploy.train.data import DataError, ImageFolderDataset, is_validation
from cicm_deploy.train.photo_filter import DuplicateFinder, difference_hash, photo_verdict


def write_images(root, count: int, rng, size=(40, 56)) -> list[str]:
    names = []
    for i in range(count):
        folder = f"{'sub/' if i % 3 == 0 else ''}{'deeper/' if i % 5 == 0 else ''}"
        relative = f"{folder}img{i:03d}.{('png', 'jpg', 'webp', 'bmp')[i % 4]}"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        names.append(relative)
    return sorted(names)


def test_data_modules_do_not_import_torch():
    code = ("import sys, cicm_deploy.train.data, cicm_deploy.train.photo_fetch, cicm_deploy.train.data_cli; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_split_is_deterministic_and_partitions_the_folder(tmp_path, rng):
    names = write_images(tmp_path, 60, rng)
    (tmp_path / "notes.txt").write_text("not an image")
    train_a = ImageFolderDataset(tmp_path, crop_size=16, split="train", val_fraction=0.25)
    val_a = ImageFolderDataset(tmp_path, crop_size=16, split="val", val_fraction=0.25)
    train_b = ImageFolderDataset(tmp_path, crop_size=16, split="train", val_fraction=0.25)
    assert train_a.files == train_b.files
    assert sorted(train_a.files + val_a.files) == names
    assert not set(train_a.files) & set(val_a.files)
    assert 5 <= len(val_a) <= 25  # ~15 of 60
    assert val_a.files == [n for n in names if is_validation(n, 0.25)]
    assert len(ImageFolderDataset(tmp_path, crop_size=16, split="all")) == 60


def test_crops_have_the_requested_size_and_dtype(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    for crop, shape in ((32, (32, 32, 3)), ((16, 48), (16, 48, 3)), (64, (64, 64, 3))):
        dataset = ImageFolderDataset(tmp_path, crop_size=crop, split="all", rng=np.random.default_rng(1))
        for i in range(len(dataset)):
            sample = dataset[i]
            assert sample.shape == shape and sample.dtype == np.uint8 and sample.flags.c_contiguous
    whole = ImageFolderDataset(tmp_path, crop_size=None, split="all", flip=False)
    assert [whole[i].shape for i in range(2)] == [(50, 70, 3), (20, 30, 3)]


def test_same_generator_seed_gives_the_same_crops(tmp_path, rng):
    write_images(tmp_path, 4, rng, size=(64, 64))
    dataset = ImageFolderDataset(tmp_path, crop_size=24, split="all")
    first = [dataset.sample(i, np.random.default_rng(7)) for i in range(4)]
    again = [dataset.sample(i, np.random.default_rng(7)) for i in range(4)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    flips = {bool(np.array_equal(dataset.sample(0, np.random.default_rng(s)), dataset.load(0)[:24, :24]))
             for s in range(20)}  # some draws differ: the crops do move
    assert False in flips


def test_the_training_cache_holds_each_readable_photo_once(tmp_path, rng):
    from cicm_deploy.train.trainer import PhotoSampler

    names = write_images(tmp_path, 4, rng)
    good = tmp_path / next(n for n in names if n.endswith(".png"))
    (tmp_path / "aaa_truncated.png").write_bytes(good.read_bytes()[:60])  # sorts first: its fallback was a twin
    with pytest.warns(CICMWarning, match="skipping unreadable image"):
        sampler = PhotoSampler(str(tmp_path), "all", crop=16, cache_side=0, val_fraction=0.0)
    assert len(sampler) == 4 and sampler.skipped == 1
    assert len({photo.tobytes() for photo in sampler.photos}) == 4


def test_bad_files_are_skipped_with_a_warning_and_counted(tmp_path, rng):
    names = write_images(tmp_path, 3, rng)
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg")
    good = tmp_path / next(n for n in names if n.endswith(".png"))
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    with pytest.warns(UserWarning, match="skipping unreadable image") as caught:
        dataset = ImageFolderDataset(tmp_path, crop_size=16, split="all")
        samples = [dataset[i] for i in range(len(dataset))]
    assert dataset.skipped == 2
    messages = [str(w.message) for w in caught if w.category is CICMWarning]
    assert len(messages) == 2  # one per bad file
    # worded alike whether the header check (garbage) or the full decode (truncated) found it
    assert all(m.startswith(f"skipping unreadable image {tmp_path}") and "expected png" not in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second epoch: no new warnings
        samples += [dataset[i] for i in range(len(dataset))]
    assert dataset.skipped == 2
    assert all(s.shape == (16, 16, 3) for s in samples)


def test_missing_empty_and_unreadable_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="none of the 1 image files"):
        ImageFolderDataset(tmp_path / "bad", split="all")


def test_filter_rejects_a_flat_drawing_and_keeps_a_photo(rng, make_photo, make_drawing):
    keep, why, _ = photo_verdict(make_photo(rng))
    assert keep, why
    keep, why, stats = photo_verdict(make_drawing())
    assert not keep and ("flat colour fills" in why or "few colours" in why), why
    assert stats.fill_share > 0.5


def test_filter_rejects_small_gray_and_synthetic_gradients(rng, make_photo):
    assert "too small" in photo_verdict(make_photo(rng, 100, 400))[1]
    gray = make_photo(rng).mean(axis=2, keepdims=True).repeat(3, axis=2).astype(np.uint8)
    assert "grayscale" in photo_verdict(gray)[1]
    yy, xx = np.mgrid[0:300, 0:400]
    gradient = np.stack([xx * 255 / 400, yy * 255 / 300, (xx + yy) * 255 / 700], axis=2)
    dithered = np.clip(gradient + rng.uniform(-1, 1, gradient.shape), 0, 255).astype(np.uint8)
    assert "smooth synthetic gradient" in photo_verdict(dithered)[1]


def test_duplicates_found_by_pixels_and_by_resized_copies(rng, make_photo):
    photo, other = make_photo(rng), make_photo(np.random.default_rng(99))[::-1]
    finder = DuplicateFinder()
    finder.add("sha-a", difference_hash(photo), "a.png")
    assert finder.check("sha-a", 0) == "a.png"  # exact copy
    resized = np.asarray(Image.fromarray(photo).resize((160, 150), Image.Resampling.BILINEAR))
    assert finder.check("sha-b", difference_hash(resized)) == "a.png"
    assert finder.check("sha-c", difference_hash(other)) is None
