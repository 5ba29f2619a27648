"""``tfnorm bench --models``: whole models, Keras normalization against tfnorm's.

Each model is built once with Keras' own layers; its variants are made from
it with :func:`tfnorm.swap_normalization` (and ``tfnorm.fold_normalization``
where this tfnorm has it), so that they differ only in their normalization:

* ``resnet50`` (``keras.applications.ResNet50``, ``weights=None``): Keras BN,
  tfnorm BN, Keras GroupNormalization(32), tfnorm GroupNormalization(32) and
  the BN model folded for inference;
* ``mobilenetv2`` (``keras.applications.MobileNetV2``): Keras BN, tfnorm BN, folded;
* ``transformer``: a pre-norm encoder stack (multi-head attention and an MLP
  per block): Keras LayerNormalization, tfnorm LayerNormalization, Keras
  RMSNormalization, tfnorm RMSNormalization.

Inference is ``model(x, training=False)``; a training step is the forward in
training mode, sparse cross-entropy on random labels, the gradients of every
trainable weight and an SGD-with-momentum update. All variants of a model are
timed in the same interleaved rounds (:mod:`tfnorm.bench.timing`), and each
row's ratio is its time over that of the row it is compared with (same run).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfnorm.bench.runner import Progress
from tfnorm.bench.timing import interleaved

MODEL_NAMES = ("resnet50", "mobilenetv2", "transformer")


@dataclasses.dataclass(frozen=True)
class Size:
    batch: int
    input_shape: Tuple[int, ...]
    options: Tuple[Tuple[str, object], ...] = ()

    def get(self, key, default=None):
        return dict(self.options).get(key, default)


# Sizes that keep a full ``--models`` run to a few minutes on two cores.
SIZES: Dict[str, Size] = {
    "resnet50": Size(8, (96, 96, 3)),
    "mobilenetv2": Size(8, (96, 96, 3), (("alpha", 1.0),)),
    "transformer": Size(8, (128, 256), (("blocks", 4), ("heads", 4), ("mlp", 1024))),
}
# For the test suite: the same code paths at the smallest sizes the models accept.
TINY_SIZES: Dict[str, Size] = {
    "resnet50": Size(2, (32, 32, 3)),
    "mobilenetv2": Size(2, (32, 32, 3), (("alpha", 0.35),)),
    "transformer": Size(2, (8, 32), (("blocks", 1), ("heads", 2), ("mlp", 64))),
}
CLASSES = 10


class Unavailable(Exception):
    """A variant that cannot be made here; the message says why."""


@dataclasses.dataclass
class Variant:
    """One version of a model: how to make it from the others, what it is compared with."""

    name: str
    make: Callable[[Dict[str, object]], object]  # built variants so far -> keras.Model
    vs: Optional[str] = None
    modes: Tuple[str, ...] = ("forward", "train")


def _keras():
    import keras

    return keras


def _tfnorm():
    import tfnorm

    return tfnorm


def _swap(source: str, to, **to_kwargs):
    def make(built):
        tn = _tfnorm()
        return tn.swap_normalization(built[source], to, to_kwargs=to_kwargs or None)

    return make


def _folded(source: str):
    """The BN model folded for inference by ``tfnorm.fold_normalization``, where it exists."""

    def make(built):
        tn = _tfnorm()
        fold = getattr(tn, "fold_normalization", None)
        if fold is None:
            raise Unavailable(f"tfnorm.fold_normalization is not in tfnorm {tn.__version__}")
        return fold(built[source])

    return make


def variants(name: str) -> List[Variant]:
    """The variants of model ``name``, in build (and table) order; the first is the original."""
    keras = _keras()
    L = keras.layers
    if name == "resnet50":
        return [
            Variant("keras BN", None),
            Variant("tfnorm BN", _swap("keras BN", "batch"), vs="keras BN"),
            Variant("keras GN(32)", _swap("keras BN", L.GroupNormalization, groups=32)),
            Variant("tfnorm GN(32)", _swap("keras GN(32)", "group", groups=32), vs="keras GN(32)"),
            Variant("folded", _folded("keras BN"), vs="keras BN", modes=("forward",)),
        ]
    if name == "mobilenetv2":
        return [
            Variant("keras BN", None),
            Variant("tfnorm BN", _swap("keras BN", "batch"), vs="keras BN"),
            Variant("folded", _folded("keras BN"), vs="keras BN", modes=("forward",)),
        ]
    if name == "transformer":
        return [
            Variant("keras LN", None),
            Variant("tfnorm LN", _swap("keras LN", "layer"), vs="keras LN"),
            Variant("keras RMS", _swap("keras LN", L.RMSNormalization)),
            Variant("tfnorm RMS", _swap("keras RMS", "rms"), vs="keras RMS"),
        ]
    raise KeyError(name)


def build_original(name: str, size: Size):
    """The model as Keras builds it (the first variant)."""
    keras = _keras()
    if name == "resnet50":
        return keras.applications.ResNet50(
            weights=None, input_shape=size.input_shape, classes=CLASSES, classifier_activation=None
        )
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(
            weights=None,
            input_shape=size.input_shape,
            alpha=size.get("alpha", 1.0),
            classes=CLASSES,
            classifier_activation=None,
        )
    if name == "transformer":
        return transformer(size.input_shape, size.get("blocks"), size.get("heads"), size.get("mlp"))
    raise KeyError(name)


def transformer(input_shape, blocks: int, heads: int, mlp: int):
    """A pre-norm encoder stack on (T, D) float inputs, pooled into ``CLASSES`` logits."""
    keras = _keras()
    L = keras.layers
    steps, width = input_shape
    inputs = keras.Input((steps, width))
    x = inputs
    for _ in range(blocks):
        h = L.LayerNormalization(epsilon=1e-6)(x)
        h = L.MultiHeadAttention(heads, width // heads)(h, h)
        x = L.Add()([x, h])
        h = L.LayerNormalization(epsilon=1e-6)(x)
        h = L.Dense(mlp, activation="gelu")(h)
        h = L.Dense(width)(h)
        x = L.Add()([x, h])
    x = L.LayerNormalization(epsilon=1e-6)(x)
    outputs = L.Dense(CLASSES)(L.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs, name="transformer_encoder")


def _forward(model, xla: bool):
    @tf.function(jit_compile=xla)
    def step(x):
        return model(x, training=False)

    return step


def _train(model, xla: bool):
    keras = _keras()
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=xla)
    def step(x, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


def _first_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


class _policy:
    """Builds Keras layers under a dtype policy (``mixed_bfloat16``), restoring the old one."""

    def __init__(self, dtype: str):
        self.policy = None if dtype == "float32" else f"mixed_{dtype}"

    def __enter__(self):
        keras = _keras()
        self.old = keras.config.dtype_policy()
        if self.policy:
            keras.config.set_dtype_policy(self.policy)

    def __exit__(self, *exc):
        _keras().config.set_dtype_policy(self.old)


def build_variants(name: str, size: Size, dtype: str) -> Tuple[Dict[str, object], List[dict]]:
    """``variant name -> model`` and the variants that could not be made (with the reason)."""
    built: Dict[str, object] = {}
    skipped: List[dict] = []
    with _policy(dtype):
        for v in variants(name):
            try:
                model = build_original(name, size) if v.make is None else v.make(built)
            except Exception as err:  # a variant that cannot be made is reported, not fatal
                reason = str(err) if isinstance(err, Unavailable) else _first_line(err)
                skipped.append({"layer": f"{name} {v.name}", "dtype": dtype, "reason": reason})
                continue
            built[v.name] = model
    return built, skipped


def run(names: Sequence[str], settings, progress: bool = True, seed: int = 0):
    """Times every model in ``names``; returns ``(rows, skipped)``."""
    sizes = TINY_SIZES if settings.tiny else SIZES
    bar = Progress(
        len(names) * len(settings.dtypes) * len(settings.compiles) * len(settings.modes),
        enabled=progress,
    )
    rows: List[dict] = []
    skipped: List[dict] = []
    rng = np.random.default_rng(seed)
    # every variant has its own tf.function by design: TensorFlow's retracing warning is noise
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        _run(names, settings, sizes, bar, rows, skipped, rng)
    finally:
        logger.setLevel(level)
        bar.close()
    return rows, skipped


def _run(names, settings, sizes, bar, rows, skipped, rng):
    for name in names:
        size = sizes[name]
        for dtype in settings.dtypes:
            t0 = time.perf_counter()
            bar.note(f"{name} {dtype}: building {len(variants(name))} variants")
            built, failed = build_variants(name, size, dtype)
            skipped += failed
            x = tf.constant(
                (rng.standard_normal((size.batch,) + tuple(size.input_shape))).astype("float32")
            )
            labels = tf.constant(rng.integers(0, CLASSES, size.batch).astype("int32"))
            specs = {v.name: v for v in variants(name)}
            original = variants(name)[0].name
            build_s = time.perf_counter() - t0
            for compile_ in settings.compiles:
                xla = compile_ == "xla"
                for mode in settings.modes:
                    bar.step(f"{name} {dtype} {compile_} {mode}")
                    fns, names_in = [], []
                    for vname, model in built.items():
                        if mode not in specs[vname].modes:
                            continue
                        fn = _forward(model, xla) if mode == "forward" else _train(model, xla)
                        call = (
                            (lambda f=fn, x=x: f(x))
                            if mode == "forward"
                            else (lambda f=fn, x=x, labels=labels: f(x, labels))
                        )
                        try:
                            call()  # traced and compiled here, outside the timing
                        except Exception as err:
                            skipped.append(
                                {
                                    "layer": f"{name} {vname}",
                                    "dtype": dtype,
                                    "compile": compile_,
                                    "mode": mode,
                                    "reason": _first_line(err),
                                }
                            )
                            continue
                        fns.append(call)
                        names_in.append(vname)
                    if not fns:
                        continue
                    res = interleaved(fns, repeats=settings.repeats, warmup=settings.warmup)
                    ms = {n: r["median_s"] * 1e3 for n, r in zip(names_in, res)}
                    for vname in names_in:
                        rows.append(
                            model_row(
                                name,
                                vname,
                                specs[vname].vs,
                                original,
                                ms,
                                size,
                                dtype,
                                compile_,
                                mode,
                                built[vname],
                                settings,
                                build_s,
                            )
                        )


def model_row(
    name, variant, vs, original, ms, size, dtype, compile_, mode, model, settings, build_s=None
) -> dict:
    """One row; ``ratio`` = ms / ms of ``vs``, ``original_ratio`` = ms / ms of the original."""
    mine = ms[variant]
    vs_ms = ms.get(vs) if vs else None
    orig_ms = ms.get(original) if variant != original else None
    return {
        "model": name,
        "variant": variant,
        "vs": vs,
        "input": [size.batch] + list(size.input_shape),
        "dtype": dtype,
        "compile": compile_,
        "xla": compile_ == "xla",
        "mode": mode,
        "ms": mine,
        "vs_ms": vs_ms,
        "ratio": None if not vs_ms else mine / vs_ms,
        "original": original,
        "original_ratio": None if not orig_ms else mine / orig_ms,
        "params": int(model.count_params()),
        "norm_layers": count_normalizations(model),
        "repeats": settings.repeats,
        "build_s": build_s,
    }


def count_normalizations(model) -> Dict[str, int]:
    """Layer class name -> count for the normalization layers in ``model`` (nested ones too)."""
    keras = _keras()
    out: Dict[str, int] = {}

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
                continue
            cls = type(layer).__name__
            if "Normalization" in cls:
                key = f"{type(layer).__module__.split('.')[0]}.{cls}"
                out[key] = out.get(key, 0) + 1

    walk(model)
    return out


def table(rows: List[dict]) -> str:
    from tfnorm.bench.report import DTYPE_SHORT, _fmt, render

    columns = (
        "model",
        "input",
        "dtype",
        "compile",
        "mode",
        "variant",
        "ms",
        "vs",
        "ratio",
        "vs original",
    )
    body = []
    for r in rows:
        body.append(
            [
                r["model"],
                "x".join(map(str, r["input"])),
                DTYPE_SHORT.get(r["dtype"], r["dtype"]),
                "XLA" if r["xla"] else "no XLA",
                r["mode"],
                r["variant"],
                _fmt(r["ms"]),
                r["vs"] or "-",
                _fmt(r["ratio"]),
                _fmt(r["original_ratio"]),
            ]
        )
    return render(columns, body, left={0, 1, 2, 3, 4, 5, 7})


MIN_REPEATS = 5


def model_warning(meta: dict) -> Optional[str]:
    """The ``--quick`` (or few repeats) warning for model rows."""
    from tfnorm.bench.report import quick_warning

    return quick_warning(meta, MIN_REPEATS, "read the ratios as rough", "`tfnorm bench --models`")


def text(meta: dict, rows: List[dict], skipped: List[dict], command: Optional[str] = None) -> str:
    s = meta["settings"]
    from tfnorm.bench.report import header

    head = header(meta, "tfnorm bench --models", command)
    head.append(
        f"median of {s['repeats']} interleaved runs after {s['warmup']} warm-up, all variants "
        "of a model in the same rounds; forward = model(x, training=False); train = forward, "
        "cross-entropy, gradients of every weight and an SGD-momentum update; "
        "ratio = ms / ms of the 'vs' row; vs original = ms / ms of the model as Keras builds it"
    )
    parts = ["\n".join(head)]
    warning = model_warning(meta)
    if warning:
        parts += ["", warning]
    parts += ["", table(rows)]
    layers = {}
    for r in rows:
        layers.setdefault((r["model"], r["variant"]), r["norm_layers"])
    if layers:
        parts += ["", "normalization layers per variant:"]
        for (m, v), counts in layers.items():
            what = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
            parts.append(f"  {m} {v}: {what}")
    if skipped:
        parts += ["", "skipped:"]
        for s_ in skipped:
            where = " ".join(str(s_[k]) for k in ("dtype", "compile", "mode") if k in s_)
            parts.append(f"  {s_['layer']}{' ' + where if where else ''}: {s_['reason']}")
    return "\n".join(parts)


def markdown(document: dict) -> str:
    """A ``--models`` run as the README's Markdown table: per variant, forward and train step.

    Each cell is the median in ms with, for a variant compared with another,
    ``(**ratio×**)`` = its ms over that variant's ms in the same rounds.

    Example:
      >>> rows = [dict(model="m", variant=v, vs=vs, dtype="float32", compile="graph", mode=mode,
      ...              ms=ms, ratio=ratio) for v, vs, mode, ms, ratio in [
      ...     ("Keras BN", None, "forward", 10.0, None), ("tfnorm BN", "Keras BN", "forward", 9.0, 0.9)]]
      >>> doc = {"command": "tfnorm bench --models", "rows": rows, "machine": {
      ...     "date": "2026-12-01T00:00", "cpu": "CPU", "cores": 2, "device": "CPU",
      ...     "python": "3.11", "tensorflow": "2.21.0", "keras": "3.15.1", "tfnorm": "0.1.0",
      ...     "settings": {"repeats": 7, "warmup": 2}}}
      >>> print(markdown(doc).splitlines()[-1])
      | m | fp32 | no XLA | tfnorm BN | 9.0 (**0.90×**) | – | Keras BN |
    """
    from tfnorm.bench.report import DTYPE_SHORT, markdown_header

    groups: Dict[tuple, Dict[str, dict]] = {}
    for r in document["rows"]:
        key = (r["model"], r["dtype"], r["compile"], r["variant"])
        groups.setdefault(key, {})[r["mode"]] = r

    def cell(r):
        if r is None or r.get("ms") is None:
            return "–"
        ratio = f" (**{r['ratio']:.2f}×**)" if r.get("ratio") is not None else ""
        return f"{r['ms']:.1f}{ratio}"

    out = [
        markdown_header(document),
        "",
        "| model | dtype | compile | variant | forward ms | train step ms | vs |",
        "|---" * 7 + "|",
    ]
    for (model, dtype, compile_, variant), by in groups.items():
        vs = next((r["vs"] for r in by.values() if r.get("vs")), None) or "–"
        out.append(
            f"| {model} | {DTYPE_SHORT.get(dtype, dtype)} | "
            f"{'XLA' if compile_ == 'xla' else 'no XLA'} | {variant} | "
            f"{cell(by.get('forward'))} | {cell(by.get('train'))} | {vs} |"
        )
    return "\n".join(out)
