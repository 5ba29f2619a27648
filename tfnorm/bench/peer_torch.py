"""PyTorch peer for ``tfnorm bench --peers torch``: run as a script, never with TensorFlow.

``python tfnorm/bench/peer_torch.py`` speaks the protocol of
:mod:`tfnorm.bench.peer_worker`. Each case is the ``torch.nn.functional`` op
(``layer_norm``, ``rms_norm``, ``group_norm``, ``instance_norm``,
``batch_norm``) in eager mode, the way PyTorch code calls it:

* layouts: batch, group and instance norm on a map take PyTorch's
  channels-first order (NCHW for tfnorm's NHWC 32x56x56x64, NCL for a
  (B, T, C) sequence); layer and RMS norm normalize the last axis, so they take
  tfnorm's own channels-last shape (NHWC, NTC, NC);
* forward runs under ``torch.inference_mode()`` (batch norm with its running
  statistics); the training step is the training-mode forward and
  ``torch.autograd.grad`` of ``y`` with respect to the input, the weight and
  the bias, for a fixed random ``dy``;
* bfloat16: input, output and weights in bfloat16 (``module.to(torch.bfloat16)``,
  PyTorch's usual way; bfloat16 input with float32 weights takes a slower,
  unfused path in 2.x), float32 weights only where the op refuses bfloat16 ones;
  the reply's ``params`` says which.
"""

from __future__ import annotations

import sys

if __package__:
    from tfnorm.bench import peer_worker
else:  # run as a script: import the protocol from this directory, then leave it
    import peer_worker

    peer_worker.script_setup(__file__)

_RANK_LAYOUT = {2: ("NC", "NC"), 3: ("NCL", "NTC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}
_CHANNELS_FIRST = ("batch_norm", "group_norm", "instance_norm")


def layout(op: str, shape) -> tuple:
    """(layout name, the tensor shape PyTorch gets) for tfnorm's channels-last ``shape``.

    >>> layout("group_norm", (32, 56, 56, 64))
    ('NCHW', (32, 64, 56, 56))
    >>> layout("layer_norm", (16, 256, 1024))
    ('NTC', (16, 256, 1024))
    """
    shape = tuple(shape)
    first, last = _RANK_LAYOUT.get(len(shape), ("C first", "C last"))
    if op in _CHANNELS_FIRST and len(shape) >= 3:
        return first, (shape[0], shape[-1]) + shape[1:-1]
    return last, shape


class TorchBackend(peer_worker.Backend):
    name = "torch"

    def load(self):
        try:
            import torch  # noqa: F401
            import torch.nn.functional  # noqa: F401
        except ImportError as err:
            return peer_worker.missing_module(err, "torch")
        self.torch = torch
        self.F = torch.nn.functional
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        return None

    def describe(self):
        torch = self.torch
        return {
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "device": self.device,
            "threads": torch.get_num_threads(),
            "compile": "eager",
            "notes": [
                "torch.nn.functional ops, eager; batch/group/instance norm "
                "channels-first (NCHW, NCL), layer/RMS norm channels-last"
            ],
        }

    def sync(self, out):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return out

    def build(self, case):
        torch = self.torch
        op, mode = case["op"], case["mode"]
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[case["dtype"]]
        name, shape = layout(op, case["shape"])
        gen = torch.Generator().manual_seed(int(case.get("seed", 0)))
        x = (torch.randn(shape, generator=gen) * 1.5 + 0.5).to(device=self.device, dtype=dtype)
        if op == "floor":

            def floor():
                with torch.inference_mode():
                    return x * 2

            return peer_worker.Prepared(
                floor, self.sync, {"impl": "x * 2", "layout": name, "compile": "eager"}
            )
        last_error = None
        for pdtype in [dtype, torch.float32] if dtype != torch.float32 else [dtype]:
            try:
                fn = self._case(op, mode, x, pdtype, case)
                self.sync(fn())  # the first call tells whether the op takes this dtype mix
            except (RuntimeError, TypeError) as err:
                last_error = err
                continue
            info = {
                "impl": f"torch.nn.functional.{op}",
                "layout": name,
                "compile": "eager",
                "params": str(pdtype).replace("torch.", ""),
            }
            return peer_worker.Prepared(fn, self.sync, info)
        raise last_error

    def _case(self, op, mode, x, pdtype, case):
        torch, F = self.torch, self.F
        channels = case["shape"][-1]
        eps = float(case.get("epsilon", 1e-3))
        train = mode == "train"

        def param(value):
            t = torch.full((channels,), value, dtype=pdtype, device=self.device)
            return t.requires_grad_(train)

        weight, bias = param(1.0), param(0.0)
        params = [weight, bias]
        if op == "layer_norm":

            def apply(t, training):
                return F.layer_norm(t, (channels,), weight, bias, eps)
        elif op == "rms_norm":
            params = [weight]

            def apply(t, training):
                return F.rms_norm(t, (channels,), weight, eps)
        elif op == "group_norm":
            groups = int(case["groups"])

            def apply(t, training):
                return F.group_norm(t, groups, weight, bias, eps)
        elif op == "instance_norm":

            def apply(t, training):
                return F.instance_norm(t, weight=weight, bias=bias, use_input_stats=True, eps=eps)
        elif op == "batch_norm":
            mean = torch.zeros(channels, dtype=pdtype, device=self.device)
            var = torch.ones(channels, dtype=pdtype, device=self.device)

            def apply(t, training):
                return F.batch_norm(
                    t, mean, var, weight, bias, training=training, momentum=0.01, eps=eps
                )
        else:
            raise ValueError(f"torch peer has no op {op!r}")

        if not train:

            def forward():
                with torch.inference_mode():
                    return apply(x, False)

            return forward

        xg = x.detach().clone().requires_grad_(True)
        with torch.no_grad():
            y0 = apply(x, True)
        gen = torch.Generator().manual_seed(int(case.get("seed", 0)) + 1)
        dy = torch.randn(y0.shape, generator=gen).to(device=self.device, dtype=y0.dtype)
        del y0

        def step():
            y = apply(xg, True)
            return y, torch.autograd.grad(y, [xg] + params, dy)

        return step


if __name__ == "__main__":
    raise SystemExit(peer_worker.main(TorchBackend()))
