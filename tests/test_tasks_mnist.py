"""Tests of the digits/MNIST tasks: IDX parsing, binarisation, affine targets, reward, exact rates."""

from __future__ import annotations

import gzip
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from _mnist_files import images_idx, labels_idx, write_mnist
from banel.models.categorical import CategoricalModel
from banel.models.transformer import TransformerConfig, TransformerModel
from banel.sequences import Sequences
from banel.tasks import resolve_task
from banel.tasks.mnist import (
    AffineRanges,
    Digits,
    ImagePrior,
    ImageTaskOptions,
    affine_set,
    binarise,
    find_mnist,
    load_mnist,
    log_success_rate,
    read_idx,
    to_resolution,
    to_sequences,
)

SHARED_MNIST = Path("/work/shared/data/mnist")


def test_read_idx_plain_and_gzipped(tmp_path: Path) -> None:
    images = np.array([[[0, 255, 7], [1, 2, 3]], [[9, 8, 7], [6, 5, 4]]])
    (tmp_path / "a").write_bytes(images_idx(images))
    (tmp_path / "a.gz").write_bytes(gzip.compress(images_idx(images)))
    (tmp_path / "l").write_bytes(labels_idx(np.array([6, 0, 9])))
    for name in ("a", "a.gz"):
        got = read_idx(tmp_path / name, 2051)
        assert got.shape == (2, 2, 3) and got.dtype == np.uint8
        assert got[0, 0].tolist() == [0, 255, 7] and got[1, 1, 2] == 4
    assert read_idx(tmp_path / "l").tolist() == [6, 0, 9]


def test_read_idx_corrupt_files_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    images = np.zeros((2, 2, 3))
    cases = {
        "magic": (images_idx(images, magic=1234), "magic number 1234, expected 2051"),
        "truncated": (images_idx(images)[:-1], "11 data bytes, expected 12 for count 2"),
        "short": (b"\x00\x00", "too short for an IDX header"),
        "badgzip": (b"\x1f\x8b" + b"garbage", "corrupt gzip data"),
        "labels_as_images": (labels_idx(np.array([1])), "magic number 2049, expected 2051 (images)"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            read_idx(tmp_path / name, 2051)
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


def test_find_and_load_mnist_from_option_env_and_torchvision_layout(tmp_path: Path, monkeypatch) -> None:
    images = write_mnist(tmp_path / "plain", gz=False)
    got, labels = load_mnist("test", tmp_path / "plain")
    assert np.array_equal(got, images) and labels.tolist() == [0, 1, 2]
    write_mnist(tmp_path / "tv" / "MNIST" / "raw")
    assert find_mnist(tmp_path / "tv") == tmp_path / "tv" / "MNIST" / "raw"
    monkeypatch.setenv("BANEL_MNIST_DIR", str(tmp_path / "plain"))
    assert find_mnist() == tmp_path / "plain"
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        find_mnist(tmp_path / "nowhere")


def test_load_mnist_rejects_mismatched_counts(tmp_path: Path) -> None:
    write_mnist(tmp_path, n=3, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels_idx(np.array([1, 2])))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        load_mnist("test", tmp_path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST copy absent")
def test_real_mnist_test_split_counts() -> None:
    images, labels = load_mnist("test", SHARED_MNIST)
    assert images.shape == (10_000, 28, 28)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_area_average_and_threshold_by_hand() -> None:
    x = torch.zeros(1, 4, 4)
    x[0, :2, :2] = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # block mean 0.75 -> ink
    x[0, :2, 2:] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # 0.25 -> background
    x[0, 2:, :2] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # exactly 0.5 -> ink (>= threshold)
    small = to_resolution(x, 2)
    assert small[0].tolist() == [[0.75, 0.25], [0.5, 0.0]]
    assert binarise(small).tolist() == [[1, 0, 1, 0]]


def test_affine_target_set_is_deterministic_and_duplicate_free() -> None:
    source = torch.zeros(2, 8, 8)
    source[0, 2:6, 3:5] = 1.0
    source[1, 1:7, 2] = 1.0
    a = affine_set(source, 8, 300, seed=5, ranges=AffineRanges())
    b = affine_set(source, 8, 300, seed=5, ranges=AffineRanges())
    c = affine_set(source, 8, 300, seed=6, ranges=AffineRanges())
    assert a.shape == (300, 64) and set(np.unique(a)) <= {0, 1}
    assert np.array_equal(a, b)
    assert len(np.unique(a, axis=0)) == 300
    assert not np.array_equal(a, c)


def test_identity_affine_keeps_the_image() -> None:
    source = (torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    ranges = AffineRanges(rotation_deg=0.0, scale=(1.0, 1.0), shift=0.0, shear=0.0)
    got = affine_set(source, 8, 3, seed=0, ranges=ranges)
    assert {r.tobytes() for r in got} == {r.tobytes() for r in binarise(source)}


def test_exact_success_rate_equals_brute_force_on_a_tiny_model() -> None:
    support = to_sequences(np.array(list(itertools.product([0, 1], repeat=4)), dtype=np.uint8))
    logits = torch.linspace(-3, 2, 16, dtype=torch.float64)
    model = CategoricalModel(support, logits)
    targets = np.array([[0, 0, 0, 1], [1, 0, 1, 0], [1, 1, 1, 1]], dtype=np.uint8)
    probs = torch.softmax(logits, 0)
    brute = float(probs[1] + probs[10] + probs[15])  # binary index of each target
    for chunk in (1, 2, 8192):
        assert math.exp(log_success_rate(model, targets, chunk)) == pytest.approx(brute, rel=1e-12)


def test_exact_success_rate_of_a_transformer_sums_to_one_over_every_image() -> None:
    model = TransformerModel(TransformerConfig(vocab_size=2, max_len=4, end_token=False, d_model=16, n_head=2))
    every = np.array(list(itertools.product([0, 1], repeat=4)), dtype=np.uint8)
    assert math.exp(log_success_rate(model, every, chunk=5)) == pytest.approx(1.0, abs=1e-6)
    lp = model.log_prob(to_sequences(every[[3, 9]]))
    assert log_success_rate(model, every[[3, 9]]) == pytest.approx(float(torch.logsumexp(lp, 0)), abs=1e-12)


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits(ImageTaskOptions(targets=500))


def test_digits_reward_is_an_exact_hash_lookup(digits: Digits) -> None:
    assert digits.targets.shape == (500, 64)
    hits = to_sequences(digits.targets[:3])
    flipped = digits.targets[:1].copy()
    flipped[0, 0] ^= 1
    known = {r.tobytes() for r in digits.targets}
    expected_flip = float(flipped[0].tobytes() in known)
    short = Sequences(hits.tokens[:, :10], torch.full((3,), 10))
    assert digits.reward(hits).tolist() == [1.0, 1.0, 1.0]
    assert digits.reward(to_sequences(flipped)).tolist() == [expected_flip]
    assert digits.reward(short).tolist() == [0.0, 0.0, 0.0]


def test_digits_decode_draws_rows(digits: Digits) -> None:
    text = digits.decode(to_sequences(digits.targets[:1]))[0]
    rows = text.split("/")
    assert len(rows) == 8 and all(len(r) == 8 for r in rows)
    assert sum(r.count("#") for r in rows) == int(digits.targets[0].sum())


def test_digits_prior_trains_on_the_raw_training_zeros_by_default(digits: Digits) -> None:
    zeros = digits.training_data()
    _, labels = digits.load("train")
    assert zeros.shape == (int((labels == 0).sum()), 64)  # the 99 zeros of images 0-999, no augmentation
    assert digits.describe()["prior_training"]["epochs"] == 300 and digits.augment == 0
    augmented = Digits(ImageTaskOptions(targets=10, prior_training=ImagePrior(augment=50, epochs=2)))
    assert augmented.training_data().shape == (50, 64) and augmented.prior_epochs == 2


def test_cpu_prior_does_not_depend_on_the_torch_threads(tmp_path: Path) -> None:
    options = ImageTaskOptions(targets=10, prior_training=ImagePrior(epochs=2))
    before = torch.get_num_threads()
    weights = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            prior = Digits(options, cache=tmp_path / f"threads{threads}").prior()
            assert torch.get_num_threads() == threads  # restored after training
        finally:
            torch.set_num_threads(before)
        weights.append(prior.state_dict()["weights"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # bit-identical


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"^resolution must be one of 0, 8, 14, 28; got 10$"):
        ImageTaskOptions(resolution=10)
    with pytest.raises(ValueError, match="resolution must be one of 8 for digits"):
        Digits(ImageTaskOptions(resolution=14, targets=10))
    with pytest.raises(ValueError, match="^epochs must be >= 1"):
        ImagePrior(epochs=0)
    with pytest.raises(ValueError, match="^shear"):
        AffineRanges(shear=2.0)
    # read as task options, an error names the setting as the user wrote it
    with pytest.raises(ValueError, match=r"^task_options.affine.shear must be in \[0, 1\), got 2.0"):
        resolve_task("digits")[1].parse_options({"affine": {"shear": 2.0}})
    with pytest.raises(ValueError, match="^task_options.prior_training.epochs must be >= 1"):
        resolve_task("mnist")[1].parse_options({"prior_training": {"epochs": 0}})


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST copy absent")
def test_mnist_14_task_from_the_real_files() -> None:
    from banel.tasks.mnist import Mnist

    task = Mnist(ImageTaskOptions(resolution=14, targets=200, data_dir=str(SHARED_MNIST)))
    assert task.targets.shape == (200, 196) and len(np.unique(task.targets, axis=0)) == 200
    zeros = task.training_data()
    assert zeros.shape == (5923, 196)  # the 5,923 training zeros, raw (no augmentation for MNIST)
    assert task.reward(to_sequences(task.targets[:5])).tolist() == [1.0] * 5
    assert task.reward(to_sequences(zeros[:5])).sum() == 0
