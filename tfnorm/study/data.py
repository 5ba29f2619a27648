"""The study's data: a :mod:`tfnorm.datasets` set (images scaled to [0, 1], sensor values as
they are), optionally subsampled."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from tfnorm import datasets


@dataclasses.dataclass
class StudyData:
    """Float32 inputs (images in [0, 1] ``(N, H, W, C)``, or sensor sequences ``(N, T, C)``
    as recorded) and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def subsample(y: np.ndarray, n: Optional[int], seed: int = 0) -> np.ndarray:
    """Indices of a stratified subset of ``n`` samples (all indices when ``n`` is None
    or not smaller than ``len(y)``), in a fixed random order.

    >>> idx = subsample(np.repeat(np.arange(10), 100), 50)
    >>> len(idx), np.bincount(np.repeat(np.arange(10), 100)[idx]).tolist()
    (50, [5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
    """
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n < 1:
        raise ValueError(f"a subset needs at least 1 sample, received n={n}")
    _, keep = datasets.stratified_split(y, test_fraction=n / len(y), seed=seed)
    return keep


def scale_images(x: np.ndarray) -> np.ndarray:
    """uint8 (0-255) or float images as float32 in [0, 1] (floats are kept as they are)."""
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(np.iinfo(x.dtype).max)
    return x.astype(np.float32)


def prepare(
    dataset: str = "mnist10k",
    data_dir: Optional[str] = None,
    train_size: Optional[int] = None,
    test_size: Optional[int] = None,
) -> StudyData:
    """Loads ``dataset`` (see :func:`tfnorm.datasets.load`) and scales it for training.

    Args:
      dataset: ``"mnist10k"``, ``"basicmotions"`` or ``"tfds:NAME[:SPLIT]"``.
      data_dir: the tfds data directory.
      train_size, test_size: stratified subsets of that many samples (None: all).

    Raises:
      ValueError: unknown or unavailable dataset (one line, says what to do).
    """
    ds = datasets.load(dataset, data_dir=data_dir)
    tr = subsample(ds.y_train, train_size, seed=1)
    te = subsample(ds.y_test, test_size, seed=2)
    return StudyData(
        scale_images(ds.x_train[tr]),
        ds.y_train[tr],
        scale_images(ds.x_test[te]),
        ds.y_test[te],
        ds.num_classes,
        ds.name,
    )
