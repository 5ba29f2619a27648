"""Data for the study and the notebooks: the embedded MNIST subset and a tfds bridge.

``load("mnist10k")`` needs no network: 10,000 real MNIST digits ship inside the
package (see ``README.md`` beside this file for origin and licence).
``load("tfds:NAME[:SPLIT]")`` reads any TensorFlow Datasets name that is
already prepared under ``data_dir``; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["Dataset", "load", "MNIST10K_PATH", "MNIST10K_SHA256", "stratified_split"]

MNIST10K_PATH = os.path.join(os.path.dirname(__file__), "mnist10k.npz")
MNIST10K_SHA256 = "94e2480bb2d38e772966d2564f7818de27e5e7d95984370b0cfb33e5bb4a39df"
SPLIT_SEED = 20191208


class Dataset(NamedTuple):
    """Images as uint8 ``(N, H, W, C)`` and integer labels ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


def stratified_split(y: np.ndarray, test_fraction: float = 0.2, seed: int = SPLIT_SEED):
    """Train and test indices with the same label proportions, deterministic for ``seed``.

    The test set has exactly ``round(len(y) * test_fraction)`` samples; each
    label contributes its share (largest remainders break ties).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(y, return_counts=True)
    n_test = int(round(len(y) * test_fraction))
    exact = counts * n_test / len(y)
    per = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - per), kind="stable")[: n_test - per.sum()]:
        per[i] += 1
    train, test = [], []
    for label, k in zip(labels, per):
        idx = rng.permutation(np.flatnonzero(y == label))
        test.append(idx[:k])
        train.append(idx[k:])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    return train, test


def _load_mnist10k(verify: bool = True) -> Dataset:
    with open(MNIST10K_PATH, "rb") as f:
        raw = f.read()
    if verify and hashlib.sha256(raw).hexdigest() != MNIST10K_SHA256:
        raise OSError(f"{MNIST10K_PATH} is damaged (sha256 mismatch); reinstall tfnorm")
    with np.load(MNIST10K_PATH) as data:
        x, y = data["x"], data["y"]
    train, test = stratified_split(y)
    x = x[..., None]
    return Dataset(x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64),
                   10, "mnist10k")


def _load_tfds(spec: str, data_dir: Optional[str]) -> Dataset:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError(
            f"dataset={spec!r} is not of the form tfds:NAME or tfds:NAME:SPLIT (e.g. tfds:mnist)")
    name = parts[1]
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # tfds raises its own DatasetNotFoundError
        raise ValueError(f"dataset={spec!r}: TensorFlow Datasets has no dataset {name!r} ({err})") \
            from None
    if not builder.is_prepared():
        where = data_dir or builder.data_dir
        raise ValueError(
            f"dataset={spec!r} is not available offline (looked in {where}); this machine cannot "
            "download it. Prepare it elsewhere and pass --data-dir, or use the embedded default "
            "--dataset mnist10k"
        )
    splits = list(builder.info.splits)
    if len(parts) == 3:
        train_split, test_split = parts[2], ("test" if "test" in splits else None)
    else:
        train_split = "train" if "train" in splits else splits[0]
        test_split = "test" if "test" in splits else None
    keys = builder.info.supervised_keys or ("image", "label")

    def arrays(split):
        ds = builder.as_dataset(split=split, batch_size=-1)
        d = tfds.as_numpy(ds)
        return np.asarray(d[keys[0]]), np.asarray(d[keys[1]]).astype(np.int64)

    x_tr, y_tr = arrays(train_split)
    if test_split is None or test_split == train_split:
        tr, te = stratified_split(y_tr)
        x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_tr[te], y_tr[te]
    else:
        x_te, y_te = arrays(test_split)
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    label_info = builder.info.features[keys[1]]
    num_classes = int(getattr(label_info, "num_classes", int(max(y_tr.max(), y_te.max())) + 1))
    return Dataset(x_tr, y_tr, x_te, y_te, num_classes, spec)


def load(name: str = "mnist10k", data_dir: Optional[str] = None) -> Dataset:
    """Loads a dataset as numpy arrays.

    Args:
      name: ``"mnist10k"`` (embedded, 8,000 train / 2,000 test, stratified,
        fixed seed) or ``"tfds:NAME[:SPLIT]"`` for a TensorFlow Datasets name
        prepared under ``data_dir`` (no download is attempted).
      data_dir: the tfds data directory.

    Returns:
      A :class:`Dataset` with uint8 images ``(N, H, W, C)`` and int64 labels.

    Example:
      >>> ds = load("mnist10k")
      >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
      ((8000, 28, 28, 1), (2000, 28, 28, 1), 10)
    """
    if name == "mnist10k":
        return _load_mnist10k()
    if name.startswith("tfds:"):
        return _load_tfds(name, data_dir)
    raise ValueError(
        f"unknown dataset={name!r}; valid: 'mnist10k' (embedded) or 'tfds:NAME[:SPLIT]'")
