"""Fails early, and clearly, when Keras runs on a backend other than TensorFlow."""

import os

_HOW = (
    "Set KERAS_BACKEND=tensorflow before Python starts (shell: export KERAS_BACKEND=tensorflow; "
    "notebook: os.environ['KERAS_BACKEND'] = 'tensorflow' before the first import of keras), "
    'or set "backend": "tensorflow" in ~/.keras/keras.json.'
)


def _error(backend, source):
    err = ImportError(
        f"tfnorm's layers need the TensorFlow backend of Keras 3, but Keras is set to use "
        f"{backend!r} ({source}). {_HOW}"
    )
    err.keras_backend = backend  # tfnorm's command line reports it in one line
    return err


def require_tensorflow_backend() -> None:
    wanted = os.environ.get("KERAS_BACKEND")
    if wanted and wanted.strip().lower() != "tensorflow":
        # Checked before importing keras: another backend may not even import here.
        raise _error(wanted, f"KERAS_BACKEND={wanted}")
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise _error(backend, "from ~/.keras/keras.json or an earlier import of keras")
