"""The analyses of the experiments: from this run's records to findings and an answer.

Each analysis (:data:`ANALYSES`, by experiment name) reads the records of
:func:`~tfnorm.study.jobs.run_jobs` and returns a section of ``results.json``: summary
tables, findings (a claim, whether it holds by the rule of :mod:`tfnorm.study.verdict`,
and its numbers) and an answer written from them. Nothing is decided in advance: a run
in which the placements do not differ says so.

>>> def run(config, seed, accuracy):
...     return {"kind": "train", "config": config, "depth": 16, "seed": seed,
...             "test_accuracy": accuracy, "epochs": [{"test_accuracy": accuracy}],
...             "seconds_per_epoch": 1.0}
>>> records = [run(c, s, a + 0.01 * s) for c, a in (("batch@every", 0.5), ("batch@first", 0.9))
...            for s in range(3)]
>>> section = ANALYSES["depth"](records, Options())
>>> section["onset_depth"], section["findings"][0]["holds"]
(16, True)
>>> print(section["answer"])  # doctest: +NORMALIZE_WHITESPACE
BN after every layer falls behind BN after the first layer from depth 16 on (of [16]); at
depth 16: 51.0 ± 1.0 % vs 91.0 ± 1.0 %.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tfnorm.study import verdict as V
from tfnorm.study.diagnostics import THEORY_GROWTH
from tfnorm.study.grids import (
    CONTROLS,
    EVERY,
    FIRST,
    GLOBAL_INPUT,
    INPUT,
    PLACEMENT_CONFIGS,
    PLACEMENT_NAMES,
    PLAIN,
    Options,
)
from tfnorm.study.jobs import EVAL_MODES
from tfnorm.study.models import Config


# -- selecting records and stating findings -------------------------------------------
def _runs(records, **match) -> List[Dict]:
    out = []
    for r in records:
        if r["kind"] != "train":
            continue
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def _acc(records, epoch: Optional[int] = None, **match) -> List[float]:
    """Test accuracies (after ``epoch``, default the last) of the matching runs."""
    out = []
    for r in _runs(records, **match):
        e = r["epochs"][-1] if epoch is None else r["epochs"][min(epoch, len(r["epochs"])) - 1]
        v = e["test_accuracy"]
        out.append(float("nan") if v is None else v)
    return out


def _summary(records, keys: Sequence[str]) -> List[Dict]:
    """One row per distinct value of ``keys`` (first-seen order): accuracy mean ± sd."""
    groups: Dict[tuple, List[Dict]] = {}
    for r in records:
        if r["kind"] == "train":
            groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    rows = []
    for key, rs in groups.items():
        acc = [x["test_accuracy"] if x["test_accuracy"] is not None else float("nan") for x in rs]
        first = [x["epochs"][0]["test_accuracy"] for x in rs]
        first = [float("nan") if v is None else v for v in first]
        m, sd = V.mean_sd(acc)
        m1, sd1 = V.mean_sd(first)
        row = dict(zip(keys, key))
        row.update(
            {
                "seeds": [x["seed"] for x in rs],
                "test_accuracy_mean": m,
                "test_accuracy_sd": sd,
                "epoch1_accuracy_mean": m1,
                "epoch1_accuracy_sd": sd1,
                "epochs": len(rs[0]["epochs"]),
                "seconds_per_epoch": V.mean_sd([x["seconds_per_epoch"] for x in rs])[0],
            }
        )
        rows.append(row)
    return rows


def _finding(claim: str, holds: bool, **numbers) -> Dict:
    return {"claim": claim, "holds": bool(holds), "numbers": numbers}


def _cmp_finding(records, a: Config, b: Config, where: str, epoch=None, **match) -> Dict:
    acc_a = _acc(records, epoch, config=a.label, **match)
    acc_b = _acc(records, epoch, config=b.label, **match)
    c = V.compare(acc_a, acc_b)
    text = V.describe(_name(a.label), _name(b.label), c)
    return _finding(f"{where}: {text}", c["differs"], **c, a=a.label, b=b.label)


def _name(label: str) -> str:
    return PLACEMENT_NAMES.get(label, label)


def _growth(records, config_label: str, depth: int, batch_size: int) -> List[float]:
    return [
        r["growth"][str(batch_size)]
        for r in records
        if r["kind"] == "probe"
        and r["config"] == config_label
        and r["depth"] == depth
        and str(batch_size) in r["growth"]
    ]


def _sens(records, config_label, depth, batch_size=None) -> List[float]:
    """Deepest-layer batch dependence of the matching probes."""
    return [
        r["sensitivity"][-1]
        for r in records
        if r["kind"] == "probe"
        and r["config"] == config_label
        and r["depth"] == depth
        and r.get("sensitivity")
        and (batch_size is None or r["batch_size"] == batch_size)
    ]


def _fmt_ms(values) -> str:
    m, sd = V.mean_sd(values)
    return f"{m:.3f} ± {sd:.3f}"


# -- the analyses ---------------------------------------------------------------------
def _mechanism_findings(records, depth: int, batch_size: int) -> List[Dict]:
    out = []
    every = _growth(records, EVERY.label, depth, batch_size)
    if every:
        m, sd = V.mean_sd(every)
        first = _growth(records, FIRST.label, depth, batch_size)
        plain = _growth(records, PLAIN.label, depth, batch_size)
        mf, _ = V.mean_sd(first) if first else (float("nan"), 0)
        c = V.compare(every, first) if first else {"differs": False}
        total = m ** (depth - 1)
        out.append(
            _finding(
                f"gradient explosion at initialization (depth {depth}, batch {batch_size}): with BN "
                f"after every layer the kernel-gradient norm grows {_fmt_ms(every)}x per layer towards "
                f"the input (mean-field theory at large batch: {THEORY_GROWTH:.4f}), so the first "
                f"layer's gradient is about {total:,.0f}x the last one's; BN after the first layer "
                f"only: {_fmt_ms(first) if first else 'n/a'}x, no normalization: "
                f"{_fmt_ms(plain) if plain else 'n/a'}x",
                c["differs"] and m > 1.0 and m > mf,
                growth_every_mean=m,
                growth_every_sd=sd,
                growth_first=first,
                growth_none=plain,
                theory=THEORY_GROWTH,
                depth=depth,
                batch_size=batch_size,
                first_to_last_ratio=total,
            )
        )
    s_every = _sens(records, EVERY.label, depth)
    s_first = _sens(records, FIRST.label, depth)
    if s_every and s_first:
        c = V.compare(s_every, s_first)
        out.append(
            _finding(
                f"batch dependence (depth {depth}, batch {batch_size}): when only its batch companions "
                f"change, a sample's deepest features change by {_fmt_ms(s_every)} (relative; 0 = unchanged, 2 = "
                f"orthogonal) with BN after every layer, {_fmt_ms(s_first)} with BN after the "
                f"first layer only",
                c["differs"] and c["direction"] == "higher",
                **c,
            )
        )
    return out


def _analyze_headline(records, opts: Options) -> Dict:
    depths = sorted({r["depth"] for r in _runs(records)})
    shallow, deep = depths[0], depths[-1]
    findings = []
    for d in (deep, shallow):
        for other in (FIRST, INPUT, PLAIN):
            findings.append(_cmp_finding(records, EVERY, other, f"depth {d}", depth=d))
    epochs = max(len(r["epochs"]) for r in _runs(records))
    if epochs > 1:
        early = _cmp_finding(
            records, EVERY, FIRST, f"depth {deep}, after 1 epoch", epoch=1, depth=deep
        )
        findings.append(early)
    probe_depth = max(r["depth"] for r in records if r["kind"] == "probe")
    bs = records[0]["batch_size"]
    findings += _mechanism_findings(records, probe_depth, bs)
    answer = _answer(findings[:3], findings[3:6], deep, shallow, findings)
    growth_rows = []
    for depth in sorted({r["depth"] for r in records if r["kind"] == "probe"}):
        for config in PLACEMENT_CONFIGS:
            g = _growth(records, config.label, depth, bs)
            s = _sens(records, config.label, depth)
            if g:
                gm, gsd = V.mean_sd(g)
                sm, ssd = V.mean_sd(s) if s else (float("nan"), float("nan"))
                growth_rows.append(
                    {
                        "config": config.label,
                        "depth": depth,
                        "batch_size": bs,
                        "growth_mean": gm,
                        "growth_sd": gsd,
                        "sensitivity_mean": sm,
                        "sensitivity_sd": ssd,
                        "seeds": len(g),
                    }
                )
    return {
        "answer": answer,
        "findings": findings,
        "summary": _summary(records, ("config", "depth")),
        "gradients": growth_rows,
    }


def _lower_than(comparisons) -> List[Dict]:
    return [f for f in comparisons if f["holds"] and f["numbers"]["direction"] == "lower"]


def _answer(deep_cmp, shallow_cmp, deep, shallow, findings) -> str:
    """The headline's answer, from the comparisons of BN after every layer with the
    single-BN placements and no normalization at the deep and the shallow depth."""

    def at(depth, comparisons):
        every = comparisons[0]["numbers"]
        lower = _lower_than(comparisons)
        text = (
            f"at depth {depth} BN after every layer reached {V.pct(every['mean_a'], every['sd_a'])}"
        )
        if not lower:
            return text + ", not lower than any other placement by the rule"
        parts = [
            f"{_name(f['numbers']['b'])} {V.pct(f['numbers']['mean_b'], f['numbers']['sd_b'])}"
            for f in lower
        ]
        return text + ", lower than " + ", ".join(parts)

    gap = lambda cs: max([-f["numbers"]["difference"] for f in _lower_than(cs)], default=0.0)  # noqa: E731
    deep_gap, shallow_gap = gap(deep_cmp), gap(shallow_cmp)
    if deep_gap > 0 and deep_gap > shallow_gap:
        lead = "Yes, and the harm grows with depth"
    elif deep_gap > 0:
        lead = "Yes, at both depths"
    elif shallow_gap > 0:
        lead = "Only at the shallow depth in this run"
    else:
        lead = "Not in this run"
    text = f"{lead}: {at(deep, deep_cmp)}; {at(shallow, shallow_cmp)} (test accuracy, mean ± sd over seeds)."
    mech = [f for f in findings if f["claim"].startswith("gradient explosion") and f["holds"]]
    dep = [f for f in findings if f["claim"].startswith("batch dependence") and f["holds"]]
    if mech and deep_gap > 0:
        g = mech[0]["numbers"]
        first = V.mean_sd(g["growth_first"])[0] if g["growth_first"] else float("nan")
        text += (
            f" Measured at initialization: with BN after every layer the gradients grow "
            f"{g['growth_every_mean']:.3f}x per layer towards the input (mean-field theory "
            f"{THEORY_GROWTH:.4f}), a factor of {g['first_to_last_ratio']:,.0f} across "
            f"{g['depth']} layers, against {first:.3f}x with a single BN after the first layer"
        )
        if dep:
            n = dep[0]["numbers"]
            text += (
                f"; and a sample's deepest features change by {n['mean_a']:.2f} (relative) "
                f"when only its batch companions change, against {n['mean_b']:.2f}"
            )
        text += "."
    return text


def _analyze_depth(records, opts: Options) -> Dict:
    depths = sorted({r["depth"] for r in _runs(records)})
    findings = []
    onset = None
    for d in depths:
        f = _cmp_finding(records, EVERY, FIRST, f"depth {d}", depth=d)
        findings.append(f)
        if onset is None and f["holds"] and f["numbers"]["direction"] == "lower":
            onset = d
    deep = depths[-1]
    controls = []
    for control in CONTROLS:
        mine = sorted({r["depth"] for r in _runs(records, config=control.label)})
        if mine:
            f = _cmp_finding(records, control, FIRST, f"control, depth {mine[-1]}", depth=mine[-1])
            findings.append(f)
            controls.append(f)
    last = findings[len(depths) - 1]["numbers"]
    if onset is None:
        answer = (
            f"BN after every layer is not lower than BN after the first layer at any depth "
            f"in {depths} by the rule."
        )
    else:
        answer = (
            f"BN after every layer falls behind BN after the first layer from depth {onset} "
            f"on (of {depths}); at depth {deep}: {V.pct(last['mean_a'], last['sd_a'])} vs "
            f"{V.pct(last['mean_b'], last['sd_b'])}."
        )
    if controls:
        parts = []
        for f in controls:
            n = f["numbers"]
            verb = {"lower": "below", "higher": "above", "same": "level with"}[n["direction"]]
            parts.append(
                f"{n['a'].split('@')[0]} {V.pct(n['mean_a'], n['sd_a'])} ({verb} BN first "
                f"at depth {f['claim'].split('depth ')[1].split(':')[0]})"
            )
        answer += " After every layer, the per-sample controls reach: " + "; ".join(parts) + "."
    return {
        "answer": answer,
        "findings": findings,
        "onset_depth": onset,
        "summary": _summary(records, ("config", "depth")),
    }


def _analyze_gradients(records, opts: Options) -> Dict:
    depths = sorted({r["depth"] for r in records})
    deep = depths[-1]
    sizes = sorted({int(b) for r in records for b in r["growth"]})
    rows = []
    for depth in depths:
        for label in dict.fromkeys(r["config"] for r in records):
            for b in sizes:
                g = _growth(records, label, depth, b)
                if g:
                    m, sd = V.mean_sd(g)
                    rows.append(
                        {
                            "config": label,
                            "depth": depth,
                            "batch_size": b,
                            "growth_mean": m,
                            "growth_sd": sd,
                            "seeds": len(g),
                        }
                    )
    findings = []
    big = sizes[-1]
    every_big = _growth(records, EVERY.label, deep, big)
    if every_big:
        m, sd = V.mean_sd(every_big)
        rel = m / THEORY_GROWTH - 1
        findings.append(
            _finding(
                f"at batch {big}, depth {deep}, BN after every layer: gradients grow {_fmt_ms(every_big)}x "
                f"per layer towards the input; mean-field theory (infinite width and batch): "
                f"{THEORY_GROWTH:.4f} ({100 * rel:+.1f}%)",
                abs(rel) < 0.05,
                growth_mean=m,
                growth_sd=sd,
                theory=THEORY_GROWTH,
                relative_to_theory=rel,
            )
        )
        small = sizes[0]
        every_small = _growth(records, EVERY.label, deep, small)
        c = V.compare(every_small, every_big)
        findings.append(
            _finding(
                f"smaller batches explode faster: {_fmt_ms(every_small)}x per layer at batch {small} "
                f"against {_fmt_ms(every_big)}x at batch {big}",
                c["differs"] and c["direction"] == "higher",
                **c,
            )
        )
    for label in (FIRST.label, INPUT.label, PLAIN.label, CONTROLS[0].label):
        g = _growth(records, label, deep, big)
        if g:
            m, sd = V.mean_sd(g)
            findings.append(
                _finding(
                    f"{_name(label)} (depth {deep}, batch {big}): {_fmt_ms(g)}x per layer, no explosion "
                    f"(< 1.05)",
                    m < 1.05,
                    growth_mean=m,
                    growth_sd=sd,
                )
            )
    sens_rows = []
    for label in dict.fromkeys(r["config"] for r in records):
        for depth in depths:
            s = [
                r["sensitivity"]
                for r in records
                if r["config"] == label and r["depth"] == depth and r.get("sensitivity")
            ]
            if s:
                arr = np.asarray(s)
                sens_rows.append(
                    {
                        "config": label,
                        "depth": depth,
                        "batch_size": records[0]["batch_size"],
                        "deepest_mean": float(arr[:, -1].mean()),
                        "deepest_sd": float(arr[:, -1].std(ddof=1)) if len(arr) > 1 else 0.0,
                        "per_layer_mean": arr.mean(axis=0).tolist(),
                    }
                )
    findings += _mechanism_findings(records, deep, records[0]["batch_size"])[1:]
    explode = [f for f in findings[:2] if f["holds"]]
    answer = (
        f"With BN after every layer, gradients at initialization grow geometrically towards "
        f"the input ({len(explode)} of 2 checks against theory and batch size hold); with "
        f"one BN or none they do not."
    )
    if not every_big:
        answer = "No BN-after-every-layer probes in this run."
    return {"answer": answer, "findings": findings, "growth": rows, "sensitivity": sens_rows}


def _analyze_batch_size(records, opts: Options) -> Dict:
    """Epochs are fixed, so a larger batch takes fewer optimizer steps: the comparison that
    isolates batch noise is between normalizations at the same batch size."""
    sizes = sorted({r["batch_size"] for r in _runs(records)})
    small = sizes[0]
    findings = []
    for b in sizes:
        for control in CONTROLS:
            if _acc(records, config=control.label, batch_size=b) and _acc(
                records, config=EVERY.label, batch_size=b
            ):
                findings.append(_cmp_finding(records, EVERY, control, f"batch {b}", batch_size=b))
    drops = {}
    for config in (EVERY, FIRST) + CONTROLS:
        means = {
            b: V.mean_sd(_acc(records, config=config.label, batch_size=b))[0]
            for b in sizes
            if _acc(records, config=config.label, batch_size=b)
        }
        if small not in means or len(means) < 2:
            continue
        best = max(means, key=lambda b: means[b] if math.isfinite(means[b]) else -1)
        if best == small:
            continue
        c = V.compare(
            _acc(records, config=config.label, batch_size=small),
            _acc(records, config=config.label, batch_size=best),
        )
        findings.append(
            _finding(
                f"{_name(config.label)}: batch {small} against its best batch size ({best}): "
                f"{V.describe(f'batch {small}', f'batch {best}', c)}",
                c["differs"],
                **c,
                config=config.label,
            )
        )
        drops[config.label] = (best, c)
    gaps = {}
    layer = CONTROLS[0].label
    for b in sizes:
        e = V.mean_sd(_acc(records, config=EVERY.label, batch_size=b))[0]
        l_ = V.mean_sd(_acc(records, config=layer, batch_size=b))[0]
        if math.isfinite(e) and math.isfinite(l_):
            gaps[b] = l_ - e
    parts = []
    if gaps:
        worst = max(gaps, key=gaps.get)
        parts.append(
            f"BN after every layer trails LayerNorm after every layer (per-sample "
            f"statistics) by {100 * gaps[small]:.1f} points at batch {small}"
            + "".join(f", {100 * gaps[b]:.1f} at batch {b}" for b in sizes[1:])
        )
        if worst == small:
            parts.append(
                "the gap is largest at the smallest batch: there the batch statistics are noise"
            )
    if EVERY.label in drops:
        best, c = drops[EVERY.label]
        parts.append(
            f"BN after every layer drops from {V.pct(c['mean_b'], c['sd_b'])} at batch "
            f"{best} to {V.pct(c['mean_a'], c['sd_a'])} at batch {small}"
            + ("" if c["differs"] else " (not a difference by the rule)")
        )
    answer = (
        (
            "; ".join(parts) + ". Epochs are fixed, so larger batches take fewer steps; "
            "compare normalizations at the same batch size."
        )
        if parts
        else "n/a"
    )
    return {
        "answer": answer[0].upper() + answer[1:],
        "findings": findings,
        "summary": _summary(records, ("config", "batch_size")),
    }


def _analyze_statistics(records, opts: Options) -> Dict:
    rows, findings = [], []
    labels = list(dict.fromkeys(r["config"] for r in _runs(records)))
    for label in labels:
        rs = _runs(records, config=label)
        row = {"config": label, "seeds": [r["seed"] for r in rs]}
        for mode in EVAL_MODES:
            m, sd = V.mean_sd([r["evaluations"][mode] for r in rs])
            row[mode] = {"mean": m, "sd": sd}
        m, sd = V.mean_sd([r["train_accuracy_recomputed"] for r in rs])
        row["train accuracy (recomputed)"] = {"mean": m, "sd": sd}
        rows.append(row)
        moving = [r["evaluations"]["moving averages"] for r in rs]
        recomputed = [r["evaluations"]["recomputed"] for r in rs]
        c = V.compare(recomputed, moving)
        findings.append(
            _finding(
                f"{label}: recomputed statistics vs moving averages: "
                f"{V.describe('recomputed', 'moving averages', c)}",
                c["differs"],
                **c,
                config=label,
            )
        )
    every = [l for l in labels if l.startswith("batch@every")]
    first = [l for l in labels if l.startswith("batch@first")]
    if every and first:
        best_every = [max(r["evaluations"].values()) for r in _runs(records, config=every[0])]
        best_first = [max(r["evaluations"].values()) for r in _runs(records, config=first[0])]
        c = V.compare(best_every, best_first)
        findings.append(
            _finding(
                f"with the best of the three statistics for each network, "
                f"{V.describe(every[0], first[0], c)}",
                c["differs"],
                **c,
            )
        )
        gap_left = c["differs"] and c["direction"] == "lower"
        lag = [
            f
            for f in findings
            if f["numbers"].get("config", "").startswith("batch@every")
            and f["holds"]
            and f["numbers"]["direction"] == "higher"
        ]
        text = []
        if lag:
            n = lag[0]["numbers"]
            text.append(
                f"part of the harm is moving-average lag: for {n['config']} recomputing the "
                f"statistics raises the test accuracy by {100 * n['difference']:.1f} points"
            )
        else:
            text.append(
                "the moving averages are not what holds BN after every layer back "
                "(recomputing them changes nothing by the rule)"
            )
        if gap_left:
            text.append(
                f"but even with the best statistics BN after every layer stays "
                f"{100 * abs(c['difference']):.1f} points behind BN after the first layer: "
                f"the rest of the harm is in what the network learned"
            )
        else:
            text.append(
                "with the best statistics BN after every layer is no longer behind BN "
                "after the first layer by the rule"
            )
        answer = "; ".join(text) + "."
        by_placement: Dict[str, List[List[float]]] = {}
        for label in labels:
            by_placement.setdefault(label.split("[")[0], []).append(
                [r["evaluations"]["recomputed"] for r in _runs(records, config=label)]
            )
        same = [v for v in by_placement.values() if len(v) > 1]
        if same and all(np.allclose(v[0], w, rtol=0, atol=1e-12) for v in same for w in v[1:]):
            answer += (
                " The momentum changes only the moving averages, not the training: with "
                "recomputed statistics the networks of both momenta score the same."
            )
        answer = answer[0].upper() + answer[1:]
    else:
        answer = "Needs both batch@every and batch@first."
    return {"answer": answer, "findings": findings, "evaluations": rows}


def _analyze_residual(records, opts: Options) -> Dict:
    depth = records[0]["depth"]
    findings = [
        _cmp_finding(records, EVERY, FIRST, f"depth {depth}, plain", residual=False),
        _cmp_finding(records, EVERY, FIRST, f"depth {depth}, with skip connections", residual=True),
    ]
    a = _acc(records, config=EVERY.label, residual=True)
    b = _acc(records, config=EVERY.label, residual=False)
    c = V.compare(a, b)
    findings.append(
        _finding(
            f"BN after every layer, depth {depth}: {V.describe('with skips', 'without', c)}",
            c["differs"],
            **c,
        )
    )
    plain_harm = findings[0]["holds"] and findings[0]["numbers"]["direction"] == "lower"
    res_harm = findings[1]["holds"] and findings[1]["numbers"]["direction"] == "lower"
    if plain_harm and not res_harm:
        answer = (
            f"With identity skip connections the harm disappears: the cause is depth "
            f"without skips (BN after every layer of a plain {depth}-layer stack)."
        )
        if findings[1]["holds"] and findings[1]["numbers"]["direction"] == "higher":
            n = findings[1]["numbers"]
            answer += (
                f" With skips the order turns around: BN after every layer "
                f"({V.pct(n['mean_a'], n['sd_a'])}) beats a single BN after the first layer "
                f"({V.pct(n['mean_b'], n['sd_b'])}): this residual stack trains with a "
                f"normalization in every block."
            )
    elif plain_harm and res_harm:
        answer = "Skip connections do not remove the harm in this run."
    else:
        answer = f"No harm at depth {depth} without skips in this run, so nothing to remove."
    return {
        "answer": answer,
        "findings": findings,
        "summary": _summary(records, ("config", "residual")),
    }


HAR_EARLY_EPOCH = 8


def _analyze_har(records, opts: Options) -> Dict:
    depths = sorted({r["depth"] for r in _runs(records)})
    epochs = max(len(r["epochs"]) for r in _runs(records))
    early = min(HAR_EARLY_EPOCH, epochs)
    findings = []
    for d in depths:
        for when in (None, early) if early < epochs else (None,):
            where = f"depth {d}" + (
                f", after {when} epochs" if when else f", after {epochs} epochs"
            )
            for a, b in (
                (EVERY, GLOBAL_INPUT),
                (EVERY, INPUT),
                (EVERY, PLAIN),
                (GLOBAL_INPUT, PLAIN),
                (INPUT, GLOBAL_INPUT),
            ):
                findings.append(_cmp_finding(records, a, b, where, epoch=when, depth=d))
    n_test = records[0].get("test_samples") or 0
    seeds = len(_runs(records, config=PLAIN.label, depth=depths[0]))
    noise = (
        f"the test set has {n_test} recordings, so one recording is {100 / n_test:.1f} points"
        if n_test
        else ""
    )
    behind: Dict[str, List[str]] = {}
    for f in findings:
        n = f["numbers"]
        if f["holds"] and n["a"] == EVERY.label and n["direction"] == "lower":
            where = f["claim"].split(":", 1)[0]
            behind.setdefault(where, []).append(
                f"{_name(n['b'])} by {100 * abs(n['difference']):.1f} points"
            )
    differ = [f for f in findings if f["holds"]]
    answer = f"{seeds} seeds per configuration; {noise}. "
    final = [f for f in findings if f"after {epochs} epochs" in f["claim"]]
    final_differ = [f for f in final if f["holds"]]
    if final and not final_differ:
        answer += (
            f"After {epochs} epochs no two placements differ by the rule ("
            + ", ".join(
                f"{_name(c.label)} {V.pct(*V.mean_sd(_acc(records, config=c.label, depth=d)))} at "
                f"depth {d}"
                for d in depths
                for c in (GLOBAL_INPUT, EVERY)
            )
            + "). "
        )
    if behind:
        answer += (
            ("But BN" if final and not final_differ else "BN")
            + " after every convolution learns slower: it is behind "
            + "; ".join(f"at {where}: {', '.join(v)}" for where, v in behind.items())
            + "."
        )
    else:
        answer += "BN after every convolution is not behind any other placement by the rule."
    if not differ:
        answer += (
            " No two configurations differ by the rule: on this tiny data set the "
            "placements are within the noise."
        )
    return {
        "answer": answer,
        "findings": findings,
        "summary": _summary(records, ("config", "depth")),
    }


#: Each experiment's analysis, by name: (records, :class:`Options`) -> its section.
ANALYSES: Dict[str, Callable[[List[Dict], Options], Dict]] = {
    "headline": _analyze_headline,
    "depth": _analyze_depth,
    "gradients": _analyze_gradients,
    "batch-size": _analyze_batch_size,
    "statistics": _analyze_statistics,
    "residual": _analyze_residual,
    "har": _analyze_har,
}
