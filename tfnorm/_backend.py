"""Fails early, and clearly, when Keras runs on a backend other than TensorFlow."""

import os


def require_tensorflow_backend() -> None:
    wanted = os.environ.get("KERAS_BACKEND")
    try:
        import keras
    except ImportError as err:  # pragma: no cover - keras is a dependency
        raise ImportError(f"tfnorm needs Keras 3 (pip install 'keras>=3.12'): {err}") from err
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ImportError(
            f"tfnorm's layers need the TensorFlow backend of Keras 3, but Keras is running on "
            f"{backend!r}" + (f" (KERAS_BACKEND={wanted})" if wanted else "") + ". Set "
            "KERAS_BACKEND=tensorflow before Python starts (shell: export KERAS_BACKEND=tensorflow; "
            "notebook: os.environ['KERAS_BACKEND'] = 'tensorflow' before the first import of keras), "
            "or set \"backend\": \"tensorflow\" in ~/.keras/keras.json."
        )
