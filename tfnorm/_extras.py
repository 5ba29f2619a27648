"""The optional packages behind tfnorm's extras, imported only where they are used.

``import tfnorm`` (the layers, ops, registry, swap, fold, distribute) needs
TensorFlow, Keras and NumPy only. The applications need more, each behind an
extra of the package::

    pip install "tfnorm[study]"   # matplotlib: the study's figures
    pip install "tfnorm[har]"     # aeon: the BasicMotions smartwatch recordings
    pip install "tfnorm[tfds]"    # tensorflow-datasets: tfds:NAME data sets

Example:
  >>> from tfnorm import _extras
  >>> _extras.require("numpy", "this example").__name__
  'numpy'
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: module -> (the distribution to install, tfnorm's extra that installs it)
EXTRAS = {
    "matplotlib": ("matplotlib", "study"),
    "aeon": ("aeon", "har"),
    "tensorflow_datasets": ("tensorflow-datasets", "tfds"),
}


class MissingExtraError(ImportError, ValueError):
    """An optional package is missing; the message is one line naming the extra to install.

    Both an ImportError (what it is) and a ValueError (what the data and study
    functions raise for an argument they cannot serve).
    """


def install_hint(module: str) -> str:
    dist, extra = EXTRAS.get(module, (module, None))
    if extra is None:
        return f"pip install {dist}"
    return f'pip install "tfnorm[{extra}]" (or pip install {dist})'


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module``, or raises :class:`MissingExtraError` saying what to install.

    Args:
      module: the module to import, e.g. ``"matplotlib"``.
      purpose: what needs it, as the start of the message ("tfnorm study's figures").
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own dependencies is broken
        dist = EXTRAS.get(module, (module, None))[0]
        raise MissingExtraError(
            f"{purpose} needs {dist}, which is not installed: {install_hint(module)}"
        ) from None
