"""The progress line of a study: one line per run, redrawn in place on a terminal.

:class:`Progress` numbers the runs, shows the epoch, a bar and the running loss and
accuracy while a run trains, and when it ends its final numbers, the time elapsed
and an estimate of the time left.

>>> import io
>>> from tfnorm.study.models import Config
>>> log = io.StringIO()
>>> p = Progress(2, stream=log, dynamic=False)
>>> p.start(Config("batch", "every"), seed=0)
'[1/2] batch@every    seed 0'
>>> p.line("batch@first d8 at init seed 0  growth 1.010x/layer")
>>> print(log.getvalue(), end="")
[2/2] batch@first d8 at init seed 0  growth 1.010x/layer
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Dict, Optional, TextIO

from tfnorm.study.models import Config

if TYPE_CHECKING:
    from tfnorm.study.train import RunResult


def _bar(fraction: float, width: int = 20) -> str:
    done = int(round(max(0.0, min(1.0, fraction)) * width))
    return (
        "=" * max(done - 1, 0)
        + (">" if 0 < done < width else "=" * min(done, 1))
        + "." * (width - done)
    )


def _fmt(v: float, spec: str = ".4f") -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


def format_duration(seconds: float) -> str:
    """``"45s"``, ``"3m05s"``, ``"1h02m"``.

    >>> format_duration(45.2), format_duration(185), format_duration(3725)
    ('45s', '3m05s', '1h02m')
    """
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Keras-style progress for a sequence of runs, one line per run.

    On a terminal the line is redrawn in place while the run trains (epoch, a bar,
    running loss and accuracy); otherwise only the finished line is printed, so logs
    stay readable with many runs. Given ``total_cost`` (the sum of the runs' ``cost``
    passed to :meth:`finish`), each finished line also says the time elapsed and an
    estimate of the time left (elapsed time per unit of cost done, times the cost left).
    """

    def __init__(
        self,
        total_runs: int,
        stream: Optional[TextIO] = None,
        dynamic: Optional[bool] = None,
        label_width: int = 14,
        total_cost: Optional[float] = None,
    ):
        self.total = total_runs
        self.stream = stream if stream is not None else sys.stdout
        if dynamic is None:
            dynamic = bool(getattr(self.stream, "isatty", lambda: False)())
        self.dynamic = dynamic
        self.label_width = label_width
        self.index = 0
        self._last_draw = 0.0
        self.total_cost = total_cost
        self.done_cost = 0.0
        self._t0 = time.monotonic()

    def prefix(self, config: Config, seed: int, label: Optional[str] = None) -> str:
        w = len(str(self.total))
        label = config.label if label is None else label
        return f"[{self.index:>{w}}/{self.total}] {label:<{self.label_width}} seed {seed}"

    def start(self, config: Config, seed: int, label: Optional[str] = None) -> str:
        self.index += 1
        return self.prefix(config, seed, label)

    def timing(self, cost: float = 1.0) -> str:
        """Counts ``cost`` as done; ``"  [1m02s elapsed, about 2m10s left]"`` (empty
        without ``total_cost``)."""
        if self.total_cost is None:
            return ""
        self.done_cost += cost
        elapsed = time.monotonic() - self._t0
        left = max(self.total_cost - self.done_cost, 0.0)
        eta = elapsed / self.done_cost * left if self.done_cost > 0 else float("nan")
        text = f"{format_duration(elapsed)} elapsed"
        if left > 0 and math.isfinite(eta):
            text += f", about {format_duration(eta)} left"
        return f"  [{text}]"

    def line(self, text: str, cost: float = 1.0) -> None:
        """A finished step that is not a training run (e.g. a measurement)."""
        self.index += 1
        w = len(str(self.total))
        text = f"[{self.index:>{w}}/{self.total}] {text}{self.timing(cost)}"
        self.stream.write(("\r" + text + "\x1b[K\n") if self.dynamic else text + "\n")
        self.stream.flush()

    def update(self, prefix: str, epoch: int, epochs: int, fraction: float, logs: Dict) -> None:
        if not self.dynamic:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        loss, acc = logs.get("loss"), logs.get("accuracy")
        text = (
            f"{prefix}  epoch {epoch}/{epochs} [{_bar(fraction)}] loss {_fmt(loss)} acc {_fmt(acc)}"
        )
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def finish(self, prefix: str, result: "RunResult", cost: float = 1.0) -> None:
        text = (
            f"{prefix}  loss {_fmt(result.final_train_loss)}  test acc "
            f"{_fmt(result.test_accuracy)}  {_fmt(result.seconds_per_epoch, '.2f')} s/epoch"
            f"{self.timing(cost)}"
        )
        self.stream.write(("\r" + text + "\x1b[K\n") if self.dynamic else text + "\n")
        self.stream.flush()
