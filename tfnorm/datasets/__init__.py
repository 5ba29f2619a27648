"""Data for the study and the notebooks: embedded MNIST, BasicMotions and a tfds bridge.

``load("mnist10k")`` needs no network: 10,000 real MNIST digits ship inside the
package (see ``README.md`` beside this file for origin and licence).
``load("basicmotions")`` is a real wearable-sensor set from the UEA multivariate
time series archive (a smartwatch's accelerometer and gyroscope, four activities,
40 train / 40 test recordings of 6 channels x 100 steps); it is read from the copy
that the optional ``aeon`` package ships in its wheel (``pip install "tfnorm[har]"``),
so nothing is downloaded either.
``load("tfds:NAME[:SPLIT]")`` reads any TensorFlow Datasets name that is
already prepared under ``data_dir``; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple, Optional

import numpy as np

from tfnorm._extras import require

__all__ = [
    "BASICMOTIONS_CLASSES",
    "Dataset",
    "load",
    "MNIST10K_PATH",
    "MNIST10K_SHA256",
    "stratified_split",
]

MNIST10K_PATH = os.path.join(os.path.dirname(__file__), "mnist10k.npz")
MNIST10K_SHA256 = "94e2480bb2d38e772966d2564f7818de27e5e7d95984370b0cfb33e5bb4a39df"
SPLIT_SEED = 20191208

#: BasicMotions labels in index order: ``y == i`` means ``BASICMOTIONS_CLASSES[i]``
#: (the archive's label names, sorted).
BASICMOTIONS_CLASSES = ("badminton", "running", "standing", "walking")


class Dataset(NamedTuple):
    """Inputs and int64 labels ``(N,)``.

    Images are uint8 ``(N, H, W, C)``; BasicMotions is float32 ``(N, steps, channels)``.
    """

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
    return Dataset(
        x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64), 10, "mnist10k"
    )


_BASICMOTIONS_CACHE: dict = {}


def _basicmotions_split(load_basic_motions, split: str):
    x, labels = load_basic_motions(split=split)  # aeon: (cases, channels, steps), str labels
    x = np.asarray(x)
    labels = np.char.lower(np.asarray(labels).astype(str))
    if x.shape[1:] != (6, 100):
        raise OSError(f"aeon's BasicMotions {split} split has shape {x.shape}, not (N, 6, 100)")
    unknown = sorted(set(labels.tolist()) - set(BASICMOTIONS_CLASSES))
    if unknown:
        raise OSError(f"aeon's BasicMotions has labels {unknown} outside {BASICMOTIONS_CLASSES}")
    y = np.searchsorted(np.asarray(BASICMOTIONS_CLASSES), labels).astype(np.int64)
    return np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32), y


def _load_basicmotions() -> Dataset:
    if not _BASICMOTIONS_CACHE:
        require("aeon", "dataset='basicmotions' (aeon ships its recordings)")
        from aeon.datasets import load_basic_motions

        train = _basicmotions_split(load_basic_motions, "train")
        test = _basicmotions_split(load_basic_motions, "test")
        _BASICMOTIONS_CACHE.update(train=train, test=test)
    (x_tr, y_tr), (x_te, y_te) = _BASICMOTIONS_CACHE["train"], _BASICMOTIONS_CACHE["test"]
    # copies, so a caller that scales in place does not change the next load
    return Dataset(
        x_tr.copy(),
        y_tr.copy(),
        x_te.copy(),
        y_te.copy(),
        len(BASICMOTIONS_CLASSES),
        "basicmotions",
    )


def _tfds_not_offline(spec: str, where) -> ValueError:
    return ValueError(
        f"dataset={spec!r} is not available offline (looked in {where}) and nothing is "
        "downloaded; prepare it on a machine with network access and pass its folder with "
        "--data-dir (data_dir=...), or use the embedded default --dataset mnist10k"
    )


def _tfds_arrays(builder, spec: str, split: str, where):
    """Images and labels of ``split`` as numpy arrays (read in chunks, no download)."""
    import tensorflow_datasets as tfds

    try:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except AssertionError:  # tfds: "could not find data in ... call download_and_prepare()"
        raise _tfds_not_offline(spec, where) from None
    except Exception as err:  # e.g. a malformed split such as "train[:abc]"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"dataset={spec!r}: cannot read split {split!r}: {first}") from None
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds.batch(1024)):
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    if not xs:
        raise ValueError(f"dataset={spec!r}: the split {split!r} is empty")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _load_tfds(spec: str, data_dir: Optional[str]) -> Dataset:
    parts = spec.split(":", 2)  # a split may hold colons: train[:50%]
    if len(parts) not in (2, 3) or not parts[1] or (len(parts) == 3 and not parts[2]):
        raise ValueError(
            f"dataset={spec!r} is not of the form tfds:NAME or tfds:NAME:SPLIT "
            "(e.g. tfds:mnist, tfds:fashion_mnist:train[:50%])"
        )
    name = parts[1]
    tfds = require("tensorflow_datasets", f"dataset={spec!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError, or a bad version/config
        if isinstance(err, getattr(tfds.core, "DatasetNotFoundError", ())):
            import difflib

            close = difflib.get_close_matches(name, tfds.list_builders(), n=3, cutoff=0.6)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else " (tfds.list_builders() lists the names)"
            )
            raise ValueError(
                f"dataset={spec!r}: TensorFlow Datasets has no dataset named {name!r}{hint}"
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"dataset={spec!r}: {first}") from None
    where = data_dir or builder.data_dir
    keys = builder.info.supervised_keys
    if not keys or not isinstance(keys[0], str):
        raise ValueError(
            f"dataset={spec!r} has no (image, label) supervised keys; the study needs an "
            "image classification dataset such as tfds:mnist or tfds:cifar10"
        )
    # Split names are known once the data is prepared (empty when they are not).
    splits = list(builder.info.splits)
    train_split = (
        parts[2] if len(parts) == 3 else ("train" if "train" in splits or not splits else splits[0])
    )
    x_tr, y_tr = _tfds_arrays(builder, spec, train_split, where)
    x_te = y_te = None
    if train_split != "test" and ("test" in splits or not splits):
        try:
            x_te, y_te = _tfds_arrays(builder, spec, "test", where)
        except ValueError:
            if splits:
                raise
    if x_te is None:  # no separate test split: hold out a stratified 20%
        tr, te = stratified_split(y_tr)
        x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_tr[te], y_tr[te]
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    if x_tr.ndim != 4 or x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(
            f"dataset={spec!r} yields inputs of shape {x_tr.shape[1:]}; the study needs images "
            "of one size (H, W) or (H, W, C)"
        )
    label_info = builder.info.features[keys[1]]
    num_classes = getattr(label_info, "num_classes", None)
    if not num_classes:
        num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(x_tr, y_tr, x_te, y_te, int(num_classes), spec)


def load(name: str = "mnist10k", data_dir: Optional[str] = None) -> Dataset:
    """Loads a dataset as numpy arrays.

    Args:
      name: ``"mnist10k"`` (embedded, 8,000 train / 2,000 test, stratified,
        fixed seed); ``"basicmotions"`` (the UEA archive's smartwatch activity set,
        read from the optional ``aeon`` package: ``pip install "tfnorm[har]"``;
        aeon's own 40 train / 40 test split, 10 recordings of each class in each;
        float32 ``(N, 100, 6)``, time steps first and the six sensor channels last
        as Keras ``Conv1D`` expects, the raw sensor values, unscaled; labels index
        :data:`BASICMOTIONS_CLASSES`, the sorted label names); or
        ``"tfds:NAME[:SPLIT]"`` for a TensorFlow Datasets name prepared under
        ``data_dir`` (no download is attempted).
      data_dir: the tfds data directory.

    Returns:
      A :class:`Dataset` with uint8 images ``(N, H, W, C)`` (or, for
      ``"basicmotions"``, float32 series ``(N, steps, channels)``) and int64 labels.

    Raises:
      ValueError: an unknown name, a tfds name that is not prepared, or
        ``"basicmotions"`` without aeon installed.

    Example:
      >>> ds = load("mnist10k")
      >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
      ((8000, 28, 28, 1), (2000, 28, 28, 1), 10)
    """
    if name == "mnist10k":
        return _load_mnist10k()
    if name == "basicmotions":
        return _load_basicmotions()
    if name.startswith("tfds:"):
        return _load_tfds(name, data_dir)
    raise ValueError(
        f"unknown dataset={name!r}; valid: 'mnist10k' (embedded), 'basicmotions' "
        "(needs aeon) or 'tfds:NAME[:SPLIT]'"
    )
