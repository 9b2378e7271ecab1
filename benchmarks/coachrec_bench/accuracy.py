"""`coachrec bench accuracy`: every registered model on Beauty and ml-latest-small, one table.

Protocol: leave-one-out (last event per user = test, second-to-last = validation, users
with < 3 events train only); the model sees train + validation events as history; items
in the history are excluded from the ranking (the target always competes); ties are broken
pessimistically. "loo-full" ranks against all items, "loo-sampled100" against 100 uniformly
sampled unseen items (seed 0). Neural models stop early on validation NDCG@10.

Published reference rows come from `shared/datasets/README.md`; the SASRec paper's Beauty
preprocessing (its own 5-core filter of the 2014 review dump) differs from the P5 5-core
file used here, so its sampled figures are a reference, not an identical setting.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from coachrec.metrics.protocol import FIT_ON
from coachrec_bench.results import results_dir, row, write

console = Console(width=170)

PROTOCOLS: dict[str, tuple[str, ...]] = {"beauty": ("loo-full", "loo-sampled100"), "ml-latest-small": ("loo-full",)}

PUBLISHED: list[dict[str, Any]] = [
    {
        "name": "published: SASRec (Kang & McAuley 2018)",
        "dataset": "beauty",
        "protocol": "loo-sampled100",
        "metrics": {"recall@10": 0.4854, "ndcg@10": 0.3219},
        "note": "paper's own Beauty preprocessing (differs from the P5 5-core file); 100 sampled negatives",
    },
    {
        "name": "published: SASRec (LlamaRec paper)",
        "dataset": "beauty",
        "protocol": "loo-full",
        "metrics": {"recall@10": 0.0844, "ndcg@10": 0.0481},
        "note": "Yue et al. 2023, full ranking",
    },
    {
        "name": "published: LRURec (LlamaRec paper)",
        "dataset": "beauty",
        "protocol": "loo-full",
        "metrics": {"recall@10": 0.0916, "ndcg@10": 0.0533},
        "note": "Yue et al. 2023, full ranking",
    },
    {
        "name": "published: LlamaRec",
        "dataset": "beauty",
        "protocol": "loo-full",
        "metrics": {"recall@10": 0.0971, "ndcg@10": 0.0554},
        "note": "Yue et al. 2023, full ranking",
    },
    *(
        {
            "name": f"published: {model} (eSASRec paper)",
            "dataset": "beauty",
            "protocol": "loo-full",
            "metrics": {"recall@10": r10, "ndcg@10": n10},
            "note": note,
        }
        for model, r10, n10, note in (
            ("SASRec, sampled softmax", 0.0921, 0.0531, "eSASRec paper 2025 (RecTools code), full ranking"),
            ("eSASRec", 0.0928, 0.0523, "eSASRec paper 2025: LiGR layers + sampled softmax, full ranking"),
            ("HSTU", 0.0788, 0.0439, "re-run by the eSASRec paper's authors, full ranking"),
            ("FuXi-alpha", 0.0809, 0.0451, "re-run by the eSASRec paper's authors, full ranking"),
            ("ActionPiece", 0.0775, 0.0424, "as reported in the eSASRec paper, full ranking"),
            ("TIGER", 0.0648, 0.0384, "as reported in the eSASRec paper, full ranking"),
        )
    ),
]

#: Fewer epochs, and SASRec's sampled softmax (1,024 shared popularity-sampled negatives,
#: logQ-corrected) instead of the full one.
QUICK: dict[str, dict[str, Any]] = {
    "sasrec": {"loss": "sampled-ce", "n_negatives": 1024, "epochs": 40, "eval_every": 4, "patience": 2},
    "rum-item": {"epochs": 24, "eval_every": 4, "patience": 2},
    "rum-feature": {"epochs": 24, "eval_every": 4, "patience": 2},
    "gru4rec": {"epochs": 5},
}

#: Named configurations beside the registered models (row name -> model, overrides on top of
#: the model's dataset defaults); each is fitted and selected like any model (early stopping
#: on validation NDCG@10), so its rows are directly comparable.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # SASRec at its dataset defaults with another seed (init, batch order, dropout): a second,
    # equally selected member for a validation-weighted blend (seed ensembles differ in errors)
    "sasrec-seed1": ("sasrec", {"seed": 1}),
    # the eSASRec paper's Beauty settings for SASRec with sampled softmax (uniform negatives)
    "sasrec-esasrec-settings": (
        "sasrec",
        {
            "dim": 64,
            "layers": 1,
            "heads": 1,
            "dropout": 0.2,
            "max_len": 50,
            "loss": "sampled-ce",
            "n_negatives": 256,
            "neg_alpha": 0.0,
            "lr": 1e-3,
            "epochs": 200,
            "eval_every": 1,
            "patience": 5,
        },
    ),
}

ORDER = ("pop", "itemknn", "sequential-rules", "gru4rec", "sasrec", "rum-item", "rum-feature", "content", "hybrid")
SHOWN = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10")


BLEND_PREFIXES = {"grid": "blend(", "fine": "blend-fine("}


def _blend_parts(name: str) -> list[str]:
    """The part names of a blend row's name ("blend(a+b)", "blend-fine(a+b)"), else []."""
    for prefix in BLEND_PREFIXES.values():
        if name.startswith(prefix) and name.endswith(")"):
            return name[len(prefix) : -1].split("+")
    return []


def _blend(parts: list[Any], split: Any, names: list[str], search: str = "grid") -> tuple[Any, dict[str, Any]]:
    """The blend of fitted `parts`, weights chosen on validation NDCG@10, and what to record.
    "grid": z-scores, the exact 1/10 simplex grid. "fine": z-scores and reciprocal ranks
    each searched by `search_weights`; the one with the better exact validation NDCG@10 kept."""
    from coachrec.models.blend import SequentialBlend

    valid = split.task("valid")
    tried: list[tuple[float, Any]] = []
    for norm in ("z", "rank") if search == "fine" else ("z",):
        t0 = time.perf_counter()
        m = SequentialBlend.from_parts(parts, split.train, valid=valid, norm=norm, search=search)
        best_ndcg = max(r["valid_ndcg@10"] for r in m.weight_table)
        console.print(
            f"  {search} blend {'+'.join(names)} norm {norm}: valid NDCG@10 {best_ndcg:.5f}, "
            f"weights {np.round(m.weights, 3).tolist()} ({time.perf_counter() - t0:.0f} s)"
        )
        tried.append((best_ndcg, m))
    best_ndcg, model = max(tried, key=lambda t: t[0])
    info = {"weights": " ".join(f"{n}={w:.2f}" for n, w in zip(names, model.weights, strict=True))}
    if search == "fine":
        info["norm"] = model.config.norm
        info["valid_ndcg@10_by_norm"] = {m.config.norm: v for v, m in tried}
    return model, info | {"valid_ndcg@10": best_ndcg}


def _paired_vs(res: Any, base: Any, base_name: str) -> dict[str, Any]:
    """Mean NDCG@10 and R@10 differences with `base` on the same users, paired bootstrap 95% CIs."""
    from coachrec.metrics.stats import paired_bootstrap

    out: dict[str, Any] = {"vs": base_name}
    for k in ("ndcg@10", "recall@10"):
        a, b = base.per_user[k], res.per_user[k]
        lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=0)
        out |= {f"{k}_delta": round(float((b - a).mean()), 5), f"{k}_delta_ci_low": round(lo, 5)}
        out[f"{k}_delta_ci_high"] = round(hi, 5)
    return out


def _cache_dir(cache: Path, dname: str, name: str, config: dict[str, Any], fit_on: str, events: int) -> Path:
    """Where a fitted model of `name` with `config` on that data and fit lies in `cache`."""
    key = json.dumps([VARIANTS.get(name, (name,))[0], config, events], sort_keys=True, default=str)
    return cache / f"{dname}-{name}-{fit_on.replace('+', '_')}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _fit(name: str, config: dict[str, Any], split: Any, fit_on: str, cache: Path | None = None) -> tuple[Any, float]:
    """Fit on the train part with early stopping on validation, or on train + valid with the
    epochs the model's config names (validation is in the training data then); returns the
    model and its fit seconds. With `cache`, a model fitted before with the same settings on
    the same data is loaded instead (its fit seconds and training log are kept beside it)."""
    from coachrec.models import create, load

    data = split.train if fit_on == "train" else split.fit_data(fit_on)
    where = _cache_dir(cache, data.name, name, config, fit_on, len(data)) if cache is not None else None
    if where is not None and (where / "bench.json").exists():
        info = json.loads((where / "bench.json").read_text())
        model = load(where)
        model.train_log = info["train_log"]
        console.print(f"  {name}: loaded from {where} (fitted in {info['fit_seconds']} s)")
        return model, float(info["fit_seconds"])
    model = create(VARIANTS[name][0] if name in VARIANTS else name, **config)
    model.on_epoch = lambda epoch, loss, seconds, rows: console.print(
        f"  {name} epoch {epoch}: loss {loss:.4f}, {seconds:.1f}s"
    )
    t0 = time.perf_counter()
    if fit_on == "train" and "valid" in inspect.signature(model.fit).parameters:
        model.fit(split.train, valid=split.task("valid"))
    else:
        model.fit(data)
    fit_s = time.perf_counter() - t0
    if where is not None:
        model.save(where)
        info = {"fit_seconds": round(fit_s, 1), "train_log": getattr(model, "train_log", [])}
        (where / "bench.json").write_text(json.dumps(info))
    return model, fit_s


def _order(models: list[str], blends: list[str], fine_blends: list[str] | None = None) -> list[str]:
    """The models in order, each blend right after the last of its parts (so a run cut short
    keeps the blends it could already make); grid blends before fine ones."""
    out: list[str] = []
    for m in models:
        out.append(m)
        for prefix, todo in ((BLEND_PREFIXES["grid"], blends), (BLEND_PREFIXES["fine"], fine_blends or [])):
            out += [f"{prefix}{b})" for b in todo if m in b.split("+") and set(b.split("+")) <= set(out)]
    return out


def run(
    datasets: list[str],
    models: list[str],
    quick: bool,
    threads: int = 0,
    fit_on: str = "train",
    save: Callable[[list[dict[str, Any]]], Any] | None = None,
    blends: list[str] | None = None,
    cache: Path | None = None,
    fine_blends: list[str] | None = None,
    vs: str | None = None,
) -> list[dict[str, Any]]:
    """Fit and evaluate; `save(rows)` is called after every model (a long run that is cut
    short keeps what it measured). Each of `blends` ("sasrec+gru4rec") blends models fitted in
    this run, weights chosen on validation, and is compared with each of its parts, paired by
    user. With `cache`, fitted models are saved there and reused by later runs. `fine_blends`
    are searched finer (rows "blend-fine(...)", see `_blend`); with `vs`, a row of this run,
    each blend's flat delta columns compare it with that row instead of its first part."""
    from coachrec import datasets as named_data
    from coachrec.data import leave_one_out
    from coachrec.metrics import evaluate, named
    from coachrec.models import config_fields
    from coachrec.models.defaults import defaults
    from coachrec.models.hybrid import Hybrid

    rows: list[dict[str, Any]] = []
    for dname in datasets:
        ds = named_data.load(dname)
        split = leave_one_out(ds)
        fitted: dict[str, Any] = {}
        results: dict[tuple[str, str], Any] = {}
        for name in _order(models, blends or [], fine_blends):
            extra: dict[str, Any] = {}
            if name in ("content", "hybrid") and ds.catalog is None:
                console.print(f"[yellow]{dname}: skipping {name} (the data set has no item text)")
                continue
            base = VARIANTS[name][0] if name in VARIANTS else name
            config = defaults(base, ds.name) | (QUICK.get(base, {}) if quick else {}) | VARIANTS.get(name, ("", {}))[1]
            part_names = _blend_parts(name)
            if threads > 0 and not part_names and "threads" in config_fields(base):
                config["threads"] = threads
            if any(p not in fitted for p in part_names):
                console.print(f"[yellow]{dname}: skipping {name} (a part failed to fit)")
                continue
            t0 = time.perf_counter()
            if part_names:
                search = "fine" if name.startswith(BLEND_PREFIXES["fine"]) else "grid"
                model, extra = _blend([fitted[p] for p in part_names], split, part_names, search)
                fit_s = time.perf_counter() - t0
            elif name == "hybrid":
                if "sasrec" not in fitted or "content" not in fitted:
                    raise typer.BadParameter(
                        "hybrid in the benchmark reuses the fitted sasrec and content models; include both"
                    )
                model = Hybrid.from_parts(
                    fitted["sasrec"], fitted["content"], split.fit_data(fit_on), weight=Hybrid.Config().weight
                )
                fit_s = time.perf_counter() - t0
            else:
                try:
                    model, fit_s = _fit(name, config, split, fit_on, cache)
                except Exception as exc:  # one broken model must not sink the whole table
                    console.print(f"[red]{dname}: {name} failed to fit: {type(exc).__name__}: {exc}")
                    continue
            fitted[name] = model
            epochs = len(getattr(model, "train_log", [])) or None
            for pname in PROTOCOLS[dname]:
                proto = replace(named(pname), fit_on=fit_on)
                res = evaluate(model, split, proto, ks=(10, 20), model_name=name, dataset=ds.name)
                metrics = {k: round(res.metrics[k], 5) for k in SHOWN} | {
                    "coverage@10": round(res.metrics.get("coverage@10", float("nan")), 4),
                    "fit_seconds": round(fit_s, 1),
                    "eval_seconds": round(res.seconds, 1),
                    "users": res.n_users,
                }
                if epochs:
                    metrics["epochs"] = epochs
                metrics |= extra
                results[name, pname] = res
                if part_names:  # flat: vs the first part (or `vs`); `paired_vs_parts`: vs each part
                    paired = [_paired_vs(res, results[p, pname], p) for p in part_names]
                    ref = _paired_vs(res, results[vs, pname], vs) if (vs, pname) in results and vs != name else None
                    metrics |= (ref or paired[0]) | {"paired_vs_parts": paired}
                r = row(name, ds.name, proto.short, metrics)
                r["fit_on"] = fit_on
                r["config"] = "quick" if quick else "default"
                r["load_avg_1m"] = round(os.getloadavg()[0], 1)
                rows.append(r)
                shown = ", ".join(f"{k} {metrics[k]}" for k in ("recall@10", "ndcg@10", "fit_seconds"))
                console.print(f"{ds.name} {pname} {name}: {shown}")
            if save is not None:
                save(rows)
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    t = Table(
        title="Accuracy — leave-one-out (last item test), seen items excluded, ties pessimistic; "
        "loo-full = full ranking over all items, loo-sampled100 = 100 uniform sampled negatives",
        title_justify="left",
        caption="R = Recall (= HR, one target per user). '/train+valid' = model refit on train + valid events "
        "(default: fitted on train, early stopping on valid). 'published' rows are reported figures, not runs here.",
        caption_justify="left",
    )
    for col in ("dataset", "protocol", "model", "R@10", "NDCG@10", "R@20", "NDCG@20", "MRR@10", "fit s"):
        t.add_column(col, justify="left" if col in ("dataset", "protocol", "model") else "right")
    key = {"beauty": 0, "ml-latest-small": 1}
    for r in sorted(rows, key=lambda r: (key.get(r["dataset"], 9), r["protocol"], r["name"].startswith("published"))):
        m = r["metrics"]
        vals = [f"{m[k]:.4f}" if k in m else "" for k in SHOWN]
        t.add_row(r["dataset"], r["protocol"], r["name"], *vals, str(m.get("fit_seconds", "")))
    return t


def bench_accuracy(
    quick: Annotated[bool, typer.Option(help="Fewer epochs; SASRec with sampled softmax (1,024 negatives)")] = False,
    dataset: Annotated[list[str], typer.Option(help="beauty and/or ml-latest-small (repeatable; default both)")] = [],  # noqa: B006
    model: Annotated[list[str], typer.Option(help="Models (repeatable; default every registered model)")] = [],  # noqa: B006
    threads: Annotated[
        int,
        typer.Option(help="torch CPU threads of models that have the setting (0 = their default); 1 on a busy machine"),
    ] = 0,
    fit_on: Annotated[
        str, typer.Option(help="train (early stopping on valid), or train+valid (refit; fixed epochs)")
    ] = "train",
    blend: Annotated[
        list[str],
        typer.Option(help="Blend of models fitted in this run, e.g. sasrec+gru4rec (weights chosen on valid)"),
    ] = [],  # noqa: B006
    cache: Annotated[
        Path | None,
        typer.Option(help="Folder for fitted models: saved after fitting, reused when settings and data match"),
    ] = None,
    blend_fine: Annotated[
        list[str],
        typer.Option(
            help="Blend like --blend, z-scores or reciprocal ranks and finer weights searched on pooled candidates, "
            "checked exactly (validation only); rows 'blend-fine(...)'"
        ),
    ] = [],  # noqa: B006
    vs: Annotated[
        str | None,
        typer.Option(
            help="A row of this run (e.g. 'blend(sasrec+sequential-rules)') the blends' delta columns pair with"
        ),
    ] = None,
) -> None:
    """Accuracy of every model on Beauty (loo-full, loo-sampled100) and ml-latest-small
    (loo-full), with the published figures as reference rows; writes benchmarks/results/accuracy.json
    (rows of other models and data sets already in the file are kept, so runs can be split)."""
    from coachrec.models import MODELS

    # blends of this run's models come from --blend; the registered "blend" would refit its parts
    names = model or [m for m in ORDER if m in MODELS] + [m for m in MODELS if m not in ORDER and m != "blend"]
    unknown = [m for m in names if m not in MODELS and m not in VARIANTS]
    if unknown:
        raise typer.BadParameter(
            f"unknown model(s) {unknown}; choose from {sorted(MODELS)} or {sorted(VARIANTS)}", param_hint="--model"
        )
    for b in [*blend, *blend_fine]:
        missing = [p for p in b.split("+") if p not in names]
        if len(b.split("+")) < 2 or missing:
            raise typer.BadParameter(f"{b!r}: a blend names 2+ models of this run joined by '+'", param_hint="--blend")
    if (blend or blend_fine) and fit_on != "train":
        raise typer.BadParameter("blend weights are chosen on validation: fit on train", param_hint="--blend")
    dsets = dataset or list(PROTOCOLS)
    for d in dsets:
        if d not in PROTOCOLS:
            raise typer.BadParameter(f"unknown data set {d!r}; choose from {list(PROTOCOLS)}", param_hint="--dataset")
    if fit_on not in FIT_ON:
        raise typer.BadParameter(f"choose from {FIT_ON}", param_hint="--fit-on")
    rows = run(
        dsets, names, quick, threads, fit_on, save=save, blends=blend, cache=cache, fine_blends=blend_fine, vs=vs
    )
    all_rows = save(rows)
    console.print(table(all_rows))
    console.print(f"wrote {results_dir() / 'accuracy.json'}")


def save(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge `rows` into accuracy.json (replacing rows of the same data set, model and fit)
    with the published reference rows at the end; returns everything written."""
    path = results_dir() / "accuracy.json"
    ran = {(r["dataset"], r["name"], r["fit_on"]) for r in rows}
    old = json.loads(path.read_text()) if path.exists() else []
    kept = [r for r in old if (r["dataset"], r["name"], r.get("fit_on", "train")) not in ran and not r.get("published")]
    marks = {"machine": "published figure (not run here)", "published": True}
    published = [
        row(p["name"], p["dataset"], p["protocol"], p["metrics"]) | marks | {"note": p["note"]} for p in PUBLISHED
    ]
    all_rows = kept + rows + published
    write("accuracy", all_rows)
    return all_rows
