"""The embedded MNIST subset, BasicMotions through aeon, and the tfds bridge (offline:
tfds.testing.mock_data)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfnorm import datasets


@pytest.fixture(scope="module")
def mnist():
    return datasets.load("mnist10k")


def test_mnist10k_shapes_and_types(mnist):
    assert mnist.x_train.shape == (8000, 28, 28, 1)
    assert mnist.x_test.shape == (2000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.x_test.dtype == np.uint8
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64
    assert mnist.y_train.shape == (8000,) and mnist.y_test.shape == (2000,)
    assert mnist.num_classes == 10 and mnist.name == "mnist10k"
    assert set(np.unique(mnist.y_train)) == set(range(10)) == set(np.unique(mnist.y_test))
    # real digits: dark background, bright strokes, the full grey range
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0
    assert 0.08 < (mnist.x_train > 127).mean() < 0.2


def test_mnist10k_split_is_a_stratified_partition_of_the_shipped_file(mnist):
    with np.load(datasets.MNIST10K_PATH) as raw:
        x, y = raw["x"], raw["y"]

    # every shipped digit lands in exactly one side
    def keys(a):
        return [hashlib.sha1(img.tobytes()).hexdigest() for img in a.reshape(len(a), -1)]

    all_keys = keys(x)
    assert len(set(all_keys)) == 10000  # the README promises distinct images
    tr, te = set(keys(mnist.x_train)), set(keys(mnist.x_test))
    assert not tr & te
    assert tr | te == set(all_keys)
    # labels travel with their images
    by_key = dict(zip(all_keys, y.astype(np.int64)))
    assert [by_key[k] for k in keys(mnist.x_test[:200])] == mnist.y_test[:200].tolist()
    # stratified: each digit keeps its share of the test set (20 %, within rounding)
    counts = np.bincount(y, minlength=10)
    test_counts = np.bincount(mnist.y_test, minlength=10)
    assert np.all(np.abs(test_counts - counts * 0.2) <= 1)
    # shuffled, not ordered by label as in the file
    assert len(np.unique(mnist.y_train[:100])) == 10


def test_mnist10k_is_deterministic(mnist):
    again = datasets.load("mnist10k")
    np.testing.assert_array_equal(again.x_train, mnist.x_train)
    np.testing.assert_array_equal(again.y_test, mnist.y_test)


def test_mnist10k_split_never_changes(mnist):
    # Published study numbers depend on this exact split; changing the seed or the
    # algorithm must be a deliberate, visible decision.
    digest = hashlib.sha256(mnist.x_test.tobytes() + mnist.y_test.tobytes()).hexdigest()
    assert digest[:16] == "db29815feeccf083"
    assert mnist.y_test[:12].tolist() == [3, 3, 8, 6, 3, 3, 9, 8, 7, 1, 4, 4]
    assert mnist.y_train[:12].tolist() == [1, 1, 2, 5, 7, 9, 7, 8, 1, 8, 3, 5]


def test_mnist10k_checksum_matches_the_file():
    with open(datasets.MNIST10K_PATH, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == datasets.MNIST10K_SHA256


@pytest.mark.parametrize("fraction", [0.2, 0.35])
def test_stratified_split(fraction):
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    tr, te = datasets.stratified_split(y, test_fraction=fraction, seed=3)
    assert len(te) == round(len(y) * fraction)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    share = np.bincount(y[te], minlength=4) / np.bincount(y, minlength=4)
    assert np.all(np.abs(share - fraction) <= 1 / 5 + 1e-9)  # within one sample of the rarest
    tr2, te2 = datasets.stratified_split(y, test_fraction=fraction, seed=3)
    np.testing.assert_array_equal(te, te2)
    _, te3 = datasets.stratified_split(y, test_fraction=fraction, seed=4)
    assert set(te3.tolist()) != set(te.tolist())


def test_unknown_dataset_name():
    with pytest.raises(
        ValueError, match=r"unknown dataset='mnist60k'.*mnist10k.*basicmotions.*tfds:NAME"
    ):
        datasets.load("mnist60k")


# BasicMotions: aeon is in the test extra, so these run (and fail) wherever the suite does.


@pytest.fixture(scope="module")
def basicmotions():
    return datasets.load("basicmotions")


@pytest.fixture(scope="module")
def aeon_arrays():
    from aeon.datasets import load_basic_motions

    return {split: load_basic_motions(split=split) for split in ("train", "test")}


def test_basicmotions_shapes_types_and_balance(basicmotions):
    ds = basicmotions
    assert ds.x_train.shape == (40, 100, 6) and ds.x_test.shape == (40, 100, 6)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.shape == (40,) and ds.y_test.shape == (40,)
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.num_classes == 4 and ds.name == "basicmotions"
    assert np.bincount(ds.y_train, minlength=4).tolist() == [10, 10, 10, 10]
    assert np.bincount(ds.y_test, minlength=4).tolist() == [10, 10, 10, 10]
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    # raw sensor readings, not standardised or squeezed into [0, 1]
    assert np.abs(ds.x_train).max() > 20 and ds.x_train.min() < -20


def test_basicmotions_values_are_aeons_arrays_transposed(basicmotions, aeon_arrays):
    for x, y, split in (
        (basicmotions.x_train, basicmotions.y_train, "train"),
        (basicmotions.x_test, basicmotions.y_test, "test"),
    ):
        raw_x, raw_y = aeon_arrays[split]
        assert raw_x.shape == (40, 6, 100)  # aeon: (cases, channels, steps)
        np.testing.assert_array_equal(x, np.transpose(raw_x, (0, 2, 1)).astype(np.float32))
        # element by element, independent of how the transpose is spelt
        for case, step, channel in ((0, 0, 0), (3, 99, 5), (17, 42, 2), (39, 7, 4)):
            assert x[case, step, channel] == np.float32(raw_x[case, channel, step])
        # the labels travel with their recordings, through the documented name order
        assert [datasets.BASICMOTIONS_CLASSES[k] for k in y] == [str(v).lower() for v in raw_y]


def test_basicmotions_class_order_is_the_sorted_label_names(basicmotions, aeon_arrays):
    assert datasets.BASICMOTIONS_CLASSES == ("badminton", "running", "standing", "walking")
    names = sorted({str(v).lower() for v in aeon_arrays["train"][1]})
    assert list(datasets.BASICMOTIONS_CLASSES) == names
    # and the names mean what they say: standing moves least, walking less than running
    x, y = basicmotions.x_train, basicmotions.y_train
    motion = [float(x[y == k].std(axis=1).mean()) for k in range(4)]
    standing, walking, running = (
        datasets.BASICMOTIONS_CLASSES.index(n) for n in ("standing", "walking", "running")
    )
    assert motion[standing] == min(motion)
    assert motion[walking] < motion[running]


def test_basicmotions_data_never_changes(basicmotions):
    # a different copy of the archive in a later aeon must be noticed, not absorbed
    ds = basicmotions
    digest = hashlib.sha256(
        ds.x_train.tobytes() + ds.y_train.tobytes() + ds.x_test.tobytes() + ds.y_test.tobytes()
    ).hexdigest()
    assert digest[:16] == "6efe44d9787e0860"


def test_basicmotions_repeated_loads_are_cached_copies(basicmotions, monkeypatch):
    import aeon.datasets

    datasets.load("basicmotions")  # fills the cache if another test emptied it

    def no_second_read(*args, **kwargs):
        raise AssertionError("the cached arrays should have been used")

    monkeypatch.setattr(aeon.datasets, "load_basic_motions", no_second_read)
    first = datasets.load("basicmotions")
    first.x_train[:] = 0  # a caller scaling in place
    second = datasets.load("basicmotions")
    np.testing.assert_array_equal(second.x_train, basicmotions.x_train)
    np.testing.assert_array_equal(second.y_test, basicmotions.y_test)
    assert not np.shares_memory(first.x_train, second.x_train)


def test_basicmotions_without_aeon_says_how_to_install(monkeypatch):
    monkeypatch.setattr(datasets, "_BASICMOTIONS_CACHE", {})
    for mod in [m for m in sys.modules if m == "aeon" or m.startswith("aeon.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "aeon", None)  # makes "import aeon..." fail
    monkeypatch.setitem(sys.modules, "aeon.datasets", None)
    with pytest.raises(ValueError) as err:
        datasets.load("basicmotions")
    msg = str(err.value)
    assert "\n" not in msg and "basicmotions" in msg
    assert 'pip install "tfnorm[har]"' in msg and "pip install aeon" in msg


_OFFLINE_LOAD = textwrap.dedent("""
    import socket, sys, urllib.request

    import tfnorm, tfnorm.datasets
    assert "aeon" not in sys.modules, "importing tfnorm imported aeon"

    def refuse(*args, **kwargs):
        raise OSError("network disabled for this test")

    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.create_connection = socket.getaddrinfo = refuse
    try:
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
    except OSError as err:
        assert "network disabled" in str(err), err
    else:
        raise AssertionError("the network guard let a connection through")
    ds = tfnorm.datasets.load("basicmotions")
    print("loaded", ds.x_train.shape, ds.x_test.shape)
""")


def test_basicmotions_needs_no_network_and_importing_tfnorm_leaves_aeon_alone():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-c", _OFFLINE_LOAD],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loaded (40, 100, 6) (40, 100, 6)" in out.stdout
    # aeon (and numba) print nothing on the way in
    assert not [line for line in out.stderr.splitlines() if "aeon" in line.lower()], out.stderr


@pytest.mark.parametrize("spec", ["tfds:", "tfds:mnist:"])
def test_malformed_tfds_spec(spec):
    with pytest.raises(ValueError, match="tfds:NAME or tfds:NAME:SPLIT"):
        datasets.load(spec)


def test_tfds_dataset_that_is_not_prepared_suggests_data_dir_and_the_default(tmp_path):
    with pytest.raises(ValueError) as err:
        datasets.load("tfds:mnist", data_dir=str(tmp_path))
    msg = str(err.value)
    assert "not available offline" in msg and "--data-dir" in msg and "mnist10k" in msg
    assert str(tmp_path) in msg and "\n" not in msg


def test_tfds_unknown_name_suggests_close_matches(tmp_path):
    with pytest.raises(ValueError, match=r"no dataset named 'mnits'.*mnist"):
        datasets.load("tfds:mnits", data_dir=str(tmp_path))


def test_tfds_path_with_mocked_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        ds = datasets.load("tfds:mnist", data_dir=str(tmp_path))
    # the same shape of thing as the embedded set: uint8 NHWC images, int64 labels
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.x_test.shape == (40, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.num_classes == 10 and ds.name == "tfds:mnist"
    assert ds.y_train.min() >= 0 and ds.y_train.max() < 10


def test_tfds_colour_images_and_holdout_when_training_on_the_test_split(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=50):
        ds = datasets.load("tfds:cifar10:test", data_dir=str(tmp_path))
    # training on "test" leaves no separate test split: a stratified 20 % holdout
    assert ds.x_train.shape == (40, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    assert ds.num_classes == 10


def test_tfds_split_with_slice_syntax(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    seen = []

    with tfds.testing.mock_data(num_examples=30):
        original = tfds.core.DatasetBuilder.as_dataset  # the mocked one

        def spy(self, *args, **kwargs):
            seen.append(kwargs.get("split"))
            return original(self, *args, **kwargs)

        tfds.core.DatasetBuilder.as_dataset = spy
        try:
            ds = datasets.load("tfds:fashion_mnist:train[:50%]", data_dir=str(tmp_path))
        finally:
            tfds.core.DatasetBuilder.as_dataset = original
    assert seen == ["train[:50%]", "test"]  # the colon inside the split is kept
    assert ds.x_train.shape[1:] == (28, 28, 1)
