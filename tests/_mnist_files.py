"""MNIST IDX files synthesised for tests: the headers `banel.tasks.mnist.read_idx` parses, any pixels and labels."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def images_idx(images: np.ndarray, magic: int = 2051) -> bytes:
    """An IDX image file's bytes: magic, count, rows, cols (big-endian), then the uint8 pixels."""
    n, r, c = images.shape
    return struct.pack(">IIII", magic, n, r, c) + images.astype(np.uint8).tobytes()


def labels_idx(labels: np.ndarray, magic: int = 2049) -> bytes:
    """An IDX label file's bytes: magic, count (big-endian), then the uint8 labels."""
    return struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n: int = 3, gz: bool = True) -> np.ndarray:
    """The four MNIST files in folder, both splits holding the same n 28x28 images (pixel k of image i is
    (784 i + k) mod 256) labelled i mod 10; returns the images."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 256
    for split in ("train", "t10k"):
        for name, data in (
            (f"{split}-images-idx3-ubyte", images_idx(images)),
            (f"{split}-labels-idx1-ubyte", labels_idx(np.arange(n) % 10)),
        ):
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return images
