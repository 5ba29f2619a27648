"""Keras-on-JAX peer for ``tfnorm bench --peers jax``: run as a script, never with TensorFlow.

``python tfnorm/bench/peer_jax.py`` (with ``KERAS_BACKEND=jax``, which it
sets itself) speaks the protocol of :mod:`tfnorm.bench.peer_worker`. Each case
is the Keras 3 layer a model would use on the JAX backend
(``LayerNormalization``, ``RMSNormalization``, ``GroupNormalization``,
``GroupNormalization(groups=-1)`` for instance norm, ``BatchNormalization``),
in tfnorm's channels-last layout, run through ``layer.stateless_call`` under
``jax.jit``:

* forward: ``training=False`` (batch norm with its moving statistics);
* training step: ``jax.vjp`` of the training-mode forward with respect to the
  input and the trainable weights, for a fixed random ``dy``; the step returns
  ``y``, both gradients and the updated moving statistics;
* bfloat16: the ``mixed_bfloat16`` dtype policy, as on the TensorFlow side;
* the floor is plain ``jax.jit(lambda x: x * 2)``.
"""

from __future__ import annotations

import inspect
import os
import sys

if __package__:
    from tfnorm.bench import peer_worker
else:  # run as a script: import the protocol from this directory, then leave it
    import peer_worker

    peer_worker.script_setup(__file__)

_LAYOUT = {2: "NC", 3: "NTC", 4: "NHWC", 5: "NDHWC"}


def _mode(kw: dict, training: bool) -> dict:
    """``training=`` for layers whose ``call`` takes it (batch norm), nothing for the others."""
    return {k: training for k in kw}


class JaxBackend(peer_worker.Backend):
    name = "jax"

    def load(self):
        os.environ["KERAS_BACKEND"] = "jax"
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as err:
            return peer_worker.missing_module(err, "jax")
        try:
            import keras
        except ImportError as err:
            return peer_worker.missing_module(
                err, "keras", "the jax peer runs Keras layers on the JAX backend"
            )
        if keras.backend.backend() != "jax":
            return (
                f"keras runs on the {keras.backend.backend()!r} backend in this process, "
                "not 'jax' (was KERAS_BACKEND overridden?)"
            )
        self.jax, self.jnp, self.keras = jax, jnp, keras
        return None

    def describe(self):
        jax, keras = self.jax, self.keras
        devices = jax.devices()
        versions = {
            "jax": jax.__version__,
            "keras": keras.__version__,
            "python": sys.version.split()[0],
        }
        try:
            import jaxlib

            versions["jaxlib"] = jaxlib.__version__
        except ImportError:  # pragma: no cover - jax needs it
            pass
        return {
            "versions": versions,
            "device": str(devices[0]) if devices else "?",
            "threads": os.cpu_count(),
            "compile": "jax.jit",
            "notes": [
                "keras.layers on the JAX backend, stateless_call under jax.jit, channels-last"
            ],
        }

    def sync(self, out):
        return self.jax.block_until_ready(out)

    def _layer(self, case):
        L = self.keras.layers
        op = case["op"]
        eps = float(case.get("epsilon", 1e-3))
        policy = None if case["dtype"] == "float32" else f"mixed_{case['dtype']}"
        kw = {} if policy is None else {"dtype": policy}
        if op == "layer_norm":
            return L.LayerNormalization(epsilon=eps, **kw), "keras.layers.LayerNormalization"
        if op == "rms_norm":
            return L.RMSNormalization(epsilon=eps, **kw), "keras.layers.RMSNormalization"
        if op == "group_norm":
            groups = int(case["groups"])
            return (
                L.GroupNormalization(groups=groups, epsilon=eps, **kw),
                f"keras.layers.GroupNormalization(groups={groups})",
            )
        if op == "instance_norm":
            return (
                L.GroupNormalization(groups=-1, epsilon=eps, **kw),
                "keras.layers.GroupNormalization(groups=-1)",
            )
        if op == "batch_norm":
            return L.BatchNormalization(epsilon=eps, **kw), "keras.layers.BatchNormalization"
        raise ValueError(f"jax peer has no op {op!r}")

    def build(self, case):
        jax, jnp = self.jax, self.jnp
        shape = tuple(case["shape"])
        dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[case["dtype"]]
        key_x, key_dy = jax.random.split(jax.random.PRNGKey(int(case.get("seed", 0))))
        x = (jax.random.normal(key_x, shape, jnp.float32) * 1.5 + 0.5).astype(dtype)
        name = _LAYOUT.get(len(shape), "C last")
        if case["op"] == "floor":
            floor = jax.jit(lambda t: t * 2)
            return peer_worker.Prepared(
                lambda: floor(x),
                self.sync,
                {"impl": "jax.jit(x * 2)", "layout": name, "compile": "jax.jit"},
            )
        layer, impl = self._layer(case)
        layer.build(shape)
        kw = {"training": None} if "training" in inspect.signature(layer.call).parameters else {}
        trainable = [v.value for v in layer.trainable_variables]
        frozen = [v.value for v in layer.non_trainable_variables]
        info = {
            "impl": impl,
            "layout": name,
            "compile": "jax.jit",
            "params": str(layer.variable_dtype),
        }

        if case["mode"] == "forward":

            @jax.jit
            def forward(tv, ntv, t):
                y, _ = layer.stateless_call(tv, ntv, t, **_mode(kw, False))
                return y

            return peer_worker.Prepared(lambda: forward(trainable, frozen, x), self.sync, info)

        def run(t, tv, ntv):
            return layer.stateless_call(tv, ntv, t, **_mode(kw, True))

        y0, _ = jax.eval_shape(run, x, trainable, frozen)
        dy = jax.random.normal(key_dy, y0.shape, jnp.float32).astype(y0.dtype)

        @jax.jit
        def step(tv, ntv, t, g):
            y, vjp, new_ntv = jax.vjp(lambda t_, tv_: run(t_, tv_, ntv), t, tv, has_aux=True)
            gx, gtv = vjp(g)
            return y, gx, gtv, new_ntv

        return peer_worker.Prepared(lambda: step(trainable, frozen, x, dy), self.sync, info)


if __name__ == "__main__":
    raise SystemExit(peer_worker.main(JaxBackend()))
