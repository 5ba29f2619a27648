"""Loads SavedModels and calls their ``serve`` endpoint with tfnorm unimportable.

This is how TF Serving sees an exported model: the graph alone. Run as a
script: ``python serve_without_tfnorm.py MANIFEST.json``; writes outputs next
to each model's inputs.
"""

import importlib.abc
import json
import os
import sys


class _BlockTfnorm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tfnorm" or name.startswith("tfnorm."):
            raise ImportError(f"{name} must not be needed to serve an exported model")
        return None


def main(manifest_path):
    sys.meta_path.insert(0, _BlockTfnorm())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    with open(manifest_path) as f:
        manifest = json.load(f)
    for entry in manifest:
        data = np.load(entry["inputs"])
        model = tf.saved_model.load(entry["model"])
        y = model.serve(tf.constant(data["x"]))
        np.save(entry["output"], np.asarray(y))
    assert "tfnorm" not in sys.modules
    print("served", len(manifest))


if __name__ == "__main__":
    main(sys.argv[1])
