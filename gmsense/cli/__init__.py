"""The one entry point, ``gmsense``. Thin: parses, calls, prints."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gmsense import __version__
from gmsense.cli import restoration as cli_restoration
from gmsense.cli import review as cli_review
from gmsense.cli._common import (
    AsUserOption,
    ConfigOption,
    DbOption,
    LayoutOption,
    ScopeOption,
    check_scope_options,
    cli_scope,
    err,
    out,
    user_errors,
)
from gmsense.cli.assessments import assessments_app
from gmsense.cli.divisions import divisions_app
from gmsense.cli.layers import layers_app
from gmsense.cli.licences import licences_app
from gmsense.cli.plan import plan_command
from gmsense.config import configs_dir, load_settings
from gmsense.errors import EXIT_OK

if TYPE_CHECKING:
    from gmsense.batch.request import ScanOptions, ScanRequest

app = typer.Typer(help="gmsense: vegetation damage on mining and exploration licences, from satellite imagery.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
scans_app = typer.Typer(help="Past scans and their status.", no_args_is_help=True)
app.add_typer(scans_app, name="scans")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"gmsense {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True)] = False,
) -> None:
    """gmsense command line."""


def _summary_table(summary: Any, title: str) -> Table:
    table = Table(title=title)
    for col in ("licence", "patches", "by class", "area (ha)", "flags", "status"):
        table.add_column(col, justify="right" if col in ("patches", "area (ha)", "flags") else "left")
    for site_id, row in sorted(summary.sites.items()):
        if row.get("error"):
            table.add_row(site_id, "-", "-", "-", "-", f"[red]failed: {row['error']}")
            continue
        if row.get("skipped"):
            table.add_row(site_id, "-", "-", "-", "-", row["skipped"])
            continue
        classes = ", ".join(f"{k} {v}" for k, v in row["by_class"].items()) or "-"
        status = f"coverage {_coverage_cell(row)}" if row.get("coverage_warning") else "ok"
        if row.get("imagery_warning"):
            status = "[yellow]rescaled imagery[/]" if status == "ok" else f"{status}, [yellow]rescaled imagery[/]"
        table.add_row(site_id, str(row["patches"]), classes, f"{row['area_m2'] / 10_000:.2f}", str(row["flags"]),
                      status)
    return table


def _scan_options(workers: int | None, scheduler: str | None, memory_limit: str | None, *, sites_file: Path | None,
                  works_file: Path | None = None, resume: bool = False, force: bool = False) -> ScanOptions:
    """How the command line runs a scan (``--memory-limit`` read here: a bad size exits 2 before
    anything is written); the files it names are recorded with the scan (no ``sites_file``: the
    licences came from the store's register, recorded as ``licences: register``)."""
    from gmsense.batch.planner import parse_memory
    from gmsense.batch.request import ScanOptions
    from gmsense.errors import InputError

    try:
        limit = parse_memory(memory_limit) if memory_limit else None
    except ValueError as exc:
        raise InputError(f"--memory-limit: {exc}") from None
    params: dict[str, Any] = {"sites_file": str(sites_file) if sites_file else None,
                              "works_file": str(works_file) if works_file else None}
    if sites_file is None:
        params["licences"] = "register"
    return ScanOptions(workers=workers, scheduler=scheduler, memory_limit=limit, resume=resume, force=force,
                       params=params)


def _scan_request(sites_file: Path | None, source_name: str, imagery: Path | None, start: str | None,
                  end: str | None, *, config: Path | None = None, buffer_m: float | None = None,
                  works_file: Path | None = None, rules_file: Path | None = None, classifier: Any = None,
                  register: tuple[list[Any], dict[str, tuple[int, str]]] | None = None,
                  layout: str | None = None) -> ScanRequest:
    """What the command line's files and flags ask to scan; every one of them is read and checked
    here, before the store is written, so bad input writes nothing. ``register``: instead of
    ``sites_file``, licences of the store's register and their (version, digest)
    (:func:`_active_licences`)."""
    from gmsense.batch.request import ScanRequest
    from gmsense.errors import InputError
    from gmsense.geo.sites import read_sites, read_works
    from gmsense.sources import get_source

    settings = load_settings(config, {"sites.buffer_m": buffer_m, "local.layout": layout}, rules_path=rules_file)
    if register is not None:
        sites, versions = register
    else:
        assert sites_file is not None
        sites, versions = read_sites(sites_file, repair_invalid=settings.sites.repair_invalid), None
    works = read_works(works_file) if works_file else None
    if source_name == "local" and imagery is None:
        raise InputError("--source local needs --imagery PATH (a folder of dated GeoTIFFs; THEIA, Sentinel-2 SAFE or "
                         "Landsat C2 products; a STAC catalogue; or a .nc/.zarr cube)")
    source = get_source(source_name, settings, imagery)
    return ScanRequest(sites, source, settings, start=start, end=end, works=works, classifier=classifier,
                       imagery=str(imagery.resolve()) if imagery else None, licence_versions=versions)


def _active_licences(db: str | None, start: str | None, end: str | None) -> tuple[list[Any], dict[str, Any]]:
    """The licences of the store's register whose latest version is active in the window (gmsense.geo.licences),
    with their (version, digest); says on stderr which were left out and why. Reads only."""
    from gmsense.errors import InputError
    from gmsense.geo.licences import inactive_reason, version_site
    from gmsense.store import Store

    store = Store(db, create=False)  # a missing store is an error, never a new empty one
    rows = store.latest_licence_versions()
    if not rows:
        raise InputError(f"the store {store.location} holds no licences to scan with --all-active: import them "
                         "first with 'gmsense licences import FILE'")
    reasons = {row.licence_id: inactive_reason(row.attrs or {}, start, end) for row in rows}
    active = [row for row in rows if reasons[row.licence_id] is None]
    left_out = [f"{licence_id} ({reason})" for licence_id, reason in reasons.items() if reason is not None]
    err.print(f"--all-active: {plural(len(active), 'licence', 'licences')} of the register active in the window"
              + (f"; not scanned: {'; '.join(left_out[:20])}" + (f" and {len(left_out) - 20} more"
                                                                 if len(left_out) > 20 else "")
                 if left_out else ""), highlight=False, soft_wrap=True)
    return [version_site(row) for row in active], {row.licence_id: (row.version, row.digest) for row in active}


def _scan(request: ScanRequest, options: ScanOptions, db: str | None, show_progress: bool = True) -> Any:
    """Run the scan into the store ``db`` with a progress bar on stderr; returns (summary, store). The
    store's protected-land layers (gmsense layers add), at their current versions, are checked by the
    rules, and recorded with the scan."""
    from dataclasses import replace

    from gmsense.batch.scan import run_scan
    from gmsense.cli._progress import ScanProgressBar
    from gmsense.store import Store

    store = Store(db)
    layers = store.layer_set()
    if layers:
        request = replace(request, layers=layers)
        options = replace(options, params={**options.params,
                                           "layers": [{"name": n, "version": v} for n, v, _ in layers.refs()]})
    with ScanProgressBar(err) as bar:
        summary = run_scan(request, store, options=options, progress=bar if show_progress else None)
    return summary, store


@app.command()
@user_errors
def scan(
    sites: Annotated[Path | None, typer.Option(
        "--sites", help="licence areas: GeoJSON, GeoPackage or Shapefile, any CRS")] = None,
    all_active: Annotated[bool, typer.Option(
        "--all-active", help="instead of --sites: every licence of the store's register (gmsense licences import) "
                             "whose latest version is active in the window: status not revoked or ended, not ended "
                             "before --start, not starting after --end (default: today)")] = False,
    source: Annotated[str, typer.Option(
        "--source", help="synthetic | local | earthengine (docs/earthengine.md)")] = "synthetic",
    imagery: Annotated[Path | None, typer.Option(
        "--imagery", help="for --source local: folder of dated GeoTIFFs, THEIA / Sentinel-2 SAFE (.zip) / Landsat "
                          "C2 L2 (.tar) products, a STAC catalogue or ItemCollection, a .nc/.zarr cube")] = None,
    layout: LayoutOption = None,
    start: Annotated[str | None, typer.Option("--start", help="first date, YYYY-MM-DD")] = None,
    end: Annotated[str | None, typer.Option("--end", help="last date, YYYY-MM-DD")] = None,
    db: DbOption = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="start a dask LocalCluster with N worker processes")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="address of an existing dask scheduler")] = None,
    buffer: Annotated[float | None, typer.Option(
        "--buffer", help="monitoring buffer around each licence, metres")] = None,
    config: ConfigOption = None,
    works: Annotated[Path | None, typer.Option(
        "--works", help="approved work programmes: site_id, work_type, year, geometry")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="flag rules YAML replacing configs/rules.yaml")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="a trained model folder (gmsense train) to label patches")] = None,
    detector: Annotated[str | None, typer.Option("--detector", help="rules | model; default: model (--model, else "
                                                  "the setting classify.model: the shipped models/default)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the newest unfinished scan of the same licences, "
                                         "imagery, dates and settings (exit 2 if there is none, or if its process "
                                         "is still running)")] = False,
    force: Annotated[bool, typer.Option("--force", help="rescan licences that have no new acquisitions too")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    memory_limit: Annotated[str | None, typer.Option("--memory-limit", help="memory one task may use, e.g. 4GB "
                                                     "(default: half the machine's over the workers); larger "
                                                     "licences are scanned in tiles")] = None,
) -> None:
    """Scan licence areas for vegetation damage and store patches and flags.

    Incremental: licences with no acquisition newer than the last one analysed (same settings)
    are skipped; with --all-active, a licence with a new version in the register is scanned again.
    After a crash, `--resume` finishes the interrupted scan of the same request.
    """
    from gmsense.batch.scan import check_dates
    from gmsense.errors import InputError

    if sites is not None and all_active:
        raise InputError("--sites and --all-active are mutually exclusive: scan the licences of a file (--sites FILE) "
                         "or the active licences of the store's register (--all-active), not both")
    if sites is None and not all_active:
        raise InputError("say which licences to scan: --sites FILE (licence areas), or --all-active (every active "
                         "licence of the store's register, filled by 'gmsense licences import FILE')")
    check_dates(start, end, ("--start", "--end"))  # before the store exists: bad dates write nothing
    classifier = _classifier(detector, model, load_settings(config).classify.model)
    options = _scan_options(workers, scheduler, memory_limit, sites_file=sites, works_file=works, resume=resume,
                            force=force)
    register = _active_licences(db, start, end) if all_active else None
    if register is not None and not register[0]:
        out.print("no licence of the register is active in the window: nothing to scan", highlight=False)
        raise typer.Exit(EXIT_OK)
    request = _scan_request(sites, source, imagery, start, end, config=config, buffer_m=buffer, works_file=works,
                            rules_file=rules, classifier=classifier, register=register, layout=layout)
    summary, store = _scan(request, options, db, progress)
    out.print(_summary_table(summary, f"scan {summary.scan_id}: {summary.status}  (store: {store.url})"))
    if summary.failures:
        err.print(f"[red]{len(summary.failures)} licence(s) failed:[/] "
                  + "; ".join(f"{k}: {v}" for k, v in summary.failures.items()))
    raise typer.Exit(summary.exit_code)


app.command("plan")(plan_command)


def _classifier(detector: str | None, model: Path | None, configured: str | None = None) -> Any:
    """The trained model to label patches with, or None for the rule baseline."""
    from gmsense.errors import InputError

    if detector not in (None, "rules", "model"):
        raise InputError(f"unknown detector {detector!r}; choose rules or model")
    if detector == "rules":
        if model is not None:
            raise InputError("--detector rules and --model contradict each other; drop one")
        return None
    from gmsense.classify.model import load_model, resolve_model

    if model is None and configured:
        model = resolve_model(configured)
    if model is None:
        if detector == "model":
            raise InputError("--detector model needs --model PATH (a folder made by 'gmsense train') "
                             "or the setting classify.model")
        return None
    return load_model(model)


def parse_seeds(text: str) -> list[int]:
    """Seeds from '1-8', '1,3,5' or '1-4,10'."""
    from gmsense.errors import InputError

    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise InputError(f"seeds {text!r} are not a list or range of whole numbers (e.g. 1-8 or 1,3,5)") from None
    if not seeds:
        raise InputError("no seeds given")
    return seeds


@app.command()
@user_errors
def train(
    name: Annotated[str, typer.Option("--name", help="model name: the folder under --models-dir")],
    synthetic_seeds: Annotated[str | None, typer.Option("--synthetic-seeds",
                                                        help="e.g. 101-140 (keep 1-8 for the benchmark)")] = None,
    labels: Annotated[list[Path] | None, typer.Option("--labels", help="labels file, repeatable: a `gmsense labels "
                                                      "export` (features included), or polygons with a "
                                                      "disturbance_class over --imagery")] = None,
    imagery: Annotated[Path | None, typer.Option("--imagery", help="local imagery the polygon labels lie on")] = None,
    unlabelled: Annotated[str, typer.Option("--unlabelled", help="patches no polygon covers: skip | natural")] = "skip",
    sites_per_seed: Annotated[int, typer.Option("--sites-per-seed", min=1)] = 2,
    domains: Annotated[str | None, typer.Option("--domains", help="synthetic worlds to train across, comma-"
                                                "separated, 'all' (the validation worlds), or 'randomised' "
                                                "(every biome, each seed's sensor, pixel size, sky, season "
                                                "and hemisphere drawn at random; 'randomised:BIOME,...' for "
                                                "some); the cross-validation leaves one biome out at a time")] = None,
    models_dir: Annotated[Path, typer.Option("--models-dir")] = Path("models"),
    seed: Annotated[int, typer.Option("--seed", help="random seed of the estimator")] = 0,
    config: ConfigOption = None,
) -> None:
    """Train the patch classifier on synthetic scenes and/or labels; scene-grouped CV; save model and card."""
    from gmsense.classify.train import confusion_png
    from gmsense.classify.train import train as train_model
    from gmsense.errors import InputError

    if not synthetic_seeds and not labels:
        raise InputError("give --synthetic-seeds, --labels, or both")
    if unlabelled not in ("skip", "natural"):
        raise InputError("--unlabelled is skip or natural")
    settings = load_settings(config)
    labelled = _labelled_tables(labels or [], imagery, settings, unlabelled)
    folder = models_dir / name
    command = "gmsense " + " ".join(sys.argv[1:]) if sys.argv and "gmsense" in sys.argv[0] else ""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("training scenes", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"train: {what}", completed=done, total=total)

        card = train_model(parse_seeds(synthetic_seeds) if synthetic_seeds else [], folder,
                           sites_per_seed=sites_per_seed, seed=seed, settings=settings, command=command,
                           domains=_domain_list(domains, randomised=True), labelled=labelled,
                           progress=progress)
    confusion_png(card["cv_metrics"], folder / "confusion.png")
    cv = card["cv_metrics"]
    how = "leave-one-domain-out CV" if cv.get("grouped_by") == "domain" else "scene-grouped CV"
    table = Table(title=f"{name}: {how}, accuracy {cv['accuracy']:.3f}")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col)
    for klass, m in card["cv_metrics"]["per_class"].items():
        table.add_row(klass, f"{m['precision']:.2f}", f"{m['recall']:.2f}", f"{m['f1']:.2f}", str(m["support"]))
    out.print(table)
    if "worst_domain" in cv:
        worst = cv["worst_domain"]
        out.print(f"worst held-out world: {worst['domain']} (accuracy {worst['accuracy']:.3f}, human-made called "
                  f"natural {worst['human_called_natural']})")
    out.print(f"model: {folder}")


def _labelled_tables(paths: list[Path], imagery: Path | None, settings: Any, unlabelled: str) -> list[Any]:
    from gmsense.classify.labels import ImageryNeededError, training_rows
    from gmsense.errors import InputError

    try:
        return [training_rows(path, imagery, settings, unlabelled=unlabelled)  # type: ignore[arg-type]
                for path in paths]
    except ImageryNeededError as exc:
        raise InputError(f"{exc} (--imagery PATH)") from None


@app.command()
@user_errors
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="model folder")],
    synthetic_seeds: Annotated[str, typer.Option("--synthetic-seeds", help="seeds not used in training, e.g. 1-8")],
    sites_per_seed: Annotated[int, typer.Option("--sites-per-seed", min=1)] = 2,
    config: ConfigOption = None,
) -> None:
    """Class accuracy of a model and of the rule baseline on the same proposed patches."""
    from gmsense.classify.model import load_model
    from gmsense.classify.train import evaluate_against_rules

    result = evaluate_against_rules(load_model(model), parse_seeds(synthetic_seeds), sites_per_seed,
                                    load_settings(config))
    table = Table(title=f"{model.name} vs rules on seeds {synthetic_seeds} ({result['patches']} patches)")
    for col in ("detector", "accuracy", "human-made F1 (macro)"):
        table.add_column(col)
    for key in ("model", "rules"):
        table.add_row(key, f"{result[key]['accuracy']:.3f}", f"{result[key]['macro_f1']:.3f}")
    out.print(table)


@app.command("models")
@user_errors
def models_list(models_dir: Annotated[Path, typer.Option("--models-dir")] = Path("models")) -> None:
    """Model folders with their version, training data and CV accuracy."""
    import json

    table = Table(title=f"models in {models_dir}")
    for col in ("name", "version", "patches", "seeds", "CV accuracy"):
        table.add_column(col)
    for card_file in sorted(models_dir.glob("*/model_card.json")):
        card = json.loads(card_file.read_text(encoding="utf-8"))
        seeds = card["training_data"].get("seeds", [])
        table.add_row(card["name"], card["version"], str(card["training_data"]["patches"]),
                      f"{min(seeds)}-{max(seeds)}" if seeds else "-", f"{card['cv_metrics']['accuracy']:.3f}")
    out.print(table)


bench_app = typer.Typer(help="The measuring sticks: accuracy against synthetic truth, restoration, speed, "
                             "scale, the review queue.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _domain_list(text: str | None, *, randomised: bool = False) -> list[str] | None:
    """``--domains``: None, 'all' (the validation worlds) or a comma-separated list, each checked; with
    ``randomised`` (training) also 'randomised' or 'randomised:BIOME,...'."""
    if not text:
        return None
    from gmsense.classify.train import RANDOMISED, randomised_worlds
    from gmsense.errors import InputError
    from gmsense.sources.synthetic import VALIDATION_DOMAINS, domain_named

    if randomised and (text.strip() == RANDOMISED or text.strip().startswith(f"{RANDOMISED}:")):
        from gmsense.sources.synthetic import DOMAINS

        biomes = [b.strip() for b in text.strip().partition(":")[2].split(",") if b.strip()] or None
        unknown = [b for b in biomes or [] if b not in DOMAINS]
        if unknown:
            raise InputError(f"--domains randomised: unknown biome {', '.join(unknown)}; known: {', '.join(DOMAINS)}")
        return randomised_worlds(biomes)
    names = list(VALIDATION_DOMAINS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    try:
        return [domain_named(n).name for n in names]
    except ValueError as exc:
        raise InputError(f"--domains: {exc}") from exc


@bench_app.command("accuracy")
@user_errors
def bench_accuracy(
    seeds: Annotated[str, typer.Option("--seeds", help="test seeds, e.g. 1-8 (never used for training)")] = "1-8",
    sites_per_seed: Annotated[int, typer.Option("--sites-per-seed", min=1)] = 3,
    out_file: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written beside it)")] = Path(
        "bench-results/accuracy.json"),
    model: Annotated[Path | None, typer.Option("--model", help="score a trained model")] = None,
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="with --model: run the rule detector too, side by side")] = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1)] = None,
    domains: Annotated[str | None, typer.Option(
        "--domains", help="leave-one-domain-out over these synthetic worlds (comma-separated, 'all', or "
                          "'randomised': each seed's random world of every biome): each is scored by a "
                          "model fitted on --model's training table without its biome")] = None,
    details: Annotated[Path | None, typer.Option(
        "--details", help="folder for every scored event (events.csv) and patch with its metrics "
                          "(patches.jsonl.gz), one subfolder per detector (model, rules)")] = None,
    config: ConfigOption = None,
) -> None:
    """Scan synthetic scenes as a user would and score the patches against their truth."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gmsense.bench.accuracy import run_accuracy, run_domains, write_results

    settings = load_settings(config)
    seed_list = parse_seeds(seeds)
    runs = []
    worlds = _domain_list(domains, randomised=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("bench accuracy", total=None)

        def progress(label: str) -> Any:
            def report(what: str, done: int, total: int) -> None:
                bar.update(task, description=f"bench accuracy ({label}): {what} scored", completed=done, total=total)
            return report

        if worlds:
            if model:
                runs.append(run_domains(seed_list, worlds, sites_per_seed=sites_per_seed, settings=settings,
                                        workers=workers, model=model, progress=progress("model"),
                                        details=details and details / "model"))
            if not model or baseline:
                runs.append(run_domains(seed_list, worlds, sites_per_seed=sites_per_seed, settings=settings,
                                        workers=workers, progress=progress("rules"),
                                        details=details and details / "rules"))
        else:
            classifier = _classifier("model", model) if model else None
            if classifier is None or baseline:
                runs.append(run_accuracy(seed_list, sites_per_seed=sites_per_seed, settings=settings,
                                         workers=workers, progress=progress("rules"),
                                         details=details and details / "rules"))
            if classifier is not None:
                runs.insert(0, run_accuracy(seed_list, sites_per_seed=sites_per_seed, settings=settings,
                                            workers=workers, classifier=classifier, progress=progress("model"),
                                            details=details and details / "model"))
    write_results(runs, out_file)
    out.print(out_file.with_suffix(".md").read_text(), markup=False)
    out.print(f"results: {out_file}")


@bench_app.command("real")
@user_errors
def bench_real(
    out_file: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written beside it)")] = Path(
        "bench-results/real.json"),
    model: Annotated[str, typer.Option("--model", help="a shipped model's name or a model folder; 'rules' for "
                                                       "the rule detector")] = "default",
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="run the rule detector too, side by side")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="the real data folder (default ../shared/data/real "
                                                             "beside the source checkout)")] = None,
    buffer_m: Annotated[float, typer.Option("--buffer", min=0, help="monitoring buffer, metres")] = 100.0,
    config: ConfigOption = None,
) -> None:
    """The pipeline on real scenes: natural dieback (THEIA), a 2017 disturbance (Romania), a 2005 wildfire (BC)."""
    from gmsense.bench.real import run_real

    with err.status("bench real: the dieback, Romania and BC scenes (about a minute)"):
        run_real(data, model=model, baseline=baseline, settings=load_settings(config), buffer_m=buffer_m,
                 out=out_file)
    out.print(out_file.with_suffix(".md").read_text(), soft_wrap=True, markup=False)
    out.print(f"results: {out_file}")


@bench_app.command("restoration")
@user_errors
def bench_restoration(
    out_file: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written beside it)")] = Path(
        "bench-results/restoration.json"),
    seeds: Annotated[str, typer.Option("--seeds", help="world seeds (held out: the tests use seeds below 100)")] = (
        "1001-1003"),
    polygons: Annotated[int, typer.Option("--polygons", min=2, help="register polygons per world")] = 200,
    years: Annotated[int, typer.Option("--years", min=3, help="annual composites per world (ending 2024)")] = 30,
    real: Annotated[bool, typer.Option(help="also the real BC wildfire polygon (../shared/data/real)")] = True,
    data: Annotated[Path | None, typer.Option("--data", help="the real data folder (default ../shared/data/real "
                                                             "beside the source checkout)")] = None,
    config: ConfigOption = None,
) -> None:
    """Restoration accounting against a synthetic world's truth: status accuracy, restored area, county rates."""
    from gmsense.bench.restoration import run_restoration_bench

    with err.status(f"bench restoration: seeds {seeds}, {polygons} polygons x {years} years each"):
        run_restoration_bench(out_file, seeds=parse_seeds(seeds), polygons=polygons, years=years,
                              settings=load_settings(config), data=data, real=real)
    out.print(out_file.with_suffix(".md").read_text(), soft_wrap=True, markup=False)
    out.print(f"results: {out_file}")


@bench_app.command("scale")
@user_errors
def bench_scale(
    out_file: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written beside it)")] = Path(
        "bench-results/scale.json"),
    small: Annotated[int, typer.Option("--small", min=2, help="small licences scanned with 1 and 2 workers")] = 120,
    large_km: Annotated[float, typer.Option("--large-km", min=0, help="side of the large licence, km (0: skip)")] = 8.0,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="budget per task for the large licence")] = "1GB",
) -> None:
    """Scaling: many small licences with 1 vs 2 workers; one large licence in tiles (peak memory)."""
    from gmsense.bench.scale import run_scale, scale_markdown

    with err.status(f"bench scale: {small} small licences on 1 and 2 workers, then the {large_km:g} km licence"):
        results = run_scale(out_file, small=small, large_km=large_km or None, memory_limit=memory_limit)
    out.print(scale_markdown(results))
    out.print(f"results: {out_file}")


@bench_app.command("speed")
@user_errors
def bench_speed(
    out_file: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written beside it)")] = Path(
        "bench-results/speed.json"),
    end_to_end: Annotated[bool, typer.Option(help="also time a full scan of the scene as a GeoTIFF folder")] = True,
    runs: Annotated[int, typer.Option(min=1, help="interleaved rounds; figures are their medians with the range")] = 5,
    large_km: Annotated[float, typer.Option(
        "--large-km", min=0, help="side of the large licence scanned on 1 and on every worker process, km "
                                  "(0: not measured)")] = 8.0,
) -> None:
    """Detection throughput against one memory pass and against nrt's EWMA, on one core and on all;
    one large licence scanned on one worker process and on every one."""
    from gmsense.bench.speed import run_speed

    with err.status(f"bench speed: {runs} interleaved rounds"):
        run_speed(out_file, load_settings(), end_to_end, runs=runs, large_km=large_km or None)
    out.print(out_file.with_suffix(".md").read_text(), markup=False)
    out.print(f"results: {out_file}")


@bench_app.command("queue")
@user_errors
def bench_queue(
    db: Annotated[str, typer.Option("--db", help="an empty store to fill: a new SQLite file, or the URL of an "
                                                 "empty PostgreSQL database")],
    out_file: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written beside it)")] = Path(
        "bench-results/queue.json"),
    flags: Annotated[int, typer.Option("--flags", min=100, help="flags of the synthetic province")] = 100_000,
    licences: Annotated[int, typer.Option("--licences", min=10, help="its licences")] = 5_000,
    runs: Annotated[int, typer.Option("--runs", min=1, help="timed requests per figure after a warm-up")] = 7,
    seed: Annotated[int, typer.Option("--seed", help="of the synthetic province")] = 20,
) -> None:
    """The review app at the size of a province: fills an empty store (bulk inserts), serves it, and times
    the queue's pages and the dashboard as a province and a county reviewer, and the flags export's memory."""
    from gmsense.bench.queue import run_queue_bench
    from gmsense.store import resolve_db_url

    with err.status("bench queue") as status:
        run_queue_bench(resolve_db_url(db), out_file, flags=flags, licences=licences, runs=runs, seed=seed,
                        progress=lambda message: status.update(f"bench queue: {message}"))
    out.print(out_file.with_suffix(".md").read_text(), soft_wrap=True, markup=False)
    out.print(f"results: {out_file}")


@app.command()
@user_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("demo-output"),
    workers: Annotated[int | None, typer.Option("--workers", min=1)] = None,
) -> None:
    """The main job on the embedded default: synthetic imagery over the bundled demo licences."""
    from gmsense.outputs.export import patches_frame, write_frame

    out_dir.mkdir(parents=True, exist_ok=True)
    db_file = out_dir / "gmsense.db"
    sites_file = configs_dir() / "demo_sites.geojson"
    request = _scan_request(sites_file, "synthetic", None, None, None,
                            classifier=_classifier(None, None, load_settings(None).classify.model))
    summary, store = _scan(request, _scan_options(workers, None, None, sites_file=sites_file), str(db_file))
    geojson = write_frame(patches_frame(store), out_dir / "patches.geojson", "geojson", "patches")
    out.print(_summary_table(summary, f"gmsense demo: scan {summary.scan_id} {summary.status}"))
    out.print(f"store: {db_file}\npatches: {geojson}", highlight=False, soft_wrap=True)
    # Commands on lines of their own, never wrapped at the terminal's width, so they can be pasted.
    out.print("review the flags in a browser:", highlight=False)
    for command in (f"gmsense users add NAME --role reviewer --scope province --db {shlex.quote(str(db_file))}",
                    f"gmsense review serve --db {shlex.quote(str(db_file))}"):
        out.print(f"  {command}", highlight=False, soft_wrap=True, markup=False)
    raise typer.Exit(summary.exit_code)


@app.command()
@user_errors
def export(
    what: Annotated[str, typer.Argument(help="patches | flags | recovery | sites | rasters | disclosure")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="geojson (default) | gpkg (with a QGIS .qml style beside it) | parquet (GeoParquet) | csv | "
                         "gpx | kml (patch centroids for the field) | corner-table; rasters: COG only")] = None,
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="file to write (default patches.geojson); for rasters the folder (default rasters)")] = None,
    db: DbOption = None,
    crs: Annotated[str | None, typer.Option("--crs", help="for corner-table: EPSG:4490 or a CGCS2000 zone")] = None,
    site: Annotated[list[str] | None, typer.Option(
        "--site", help="rasters: only this licence (repeatable); default every analysed licence")] = None,
    lang: Annotated[str, typer.Option("--lang", help="disclosure: en | zh")] = "en",
    scope: ScopeOption = None,
    as_user: AsUserOption = None,
) -> None:
    """Write stored results for GIS (EPSG:4326), analysis and the field; `rasters` writes per-licence
    Cloud-Optimized GeoTIFFs of the patches with a STAC catalogue; `disclosure` the public page and CSVs of
    confirmed violations and restoration status (no reviewer names, no comments). `--scope` or `--as-user`:
    only the licences (and mine land) of that scope, filtered by the database as in the review app; flags
    carry their escalation stage."""
    from gmsense.errors import InputError
    from gmsense.files import check_target
    from gmsense.outputs import export as ex
    from gmsense.review.exports import flags_frame
    from gmsense.store import Store

    makers = {"patches": ex.patches_frame, "flags": flags_frame, "recovery": ex.recovery_frame,
              "sites": ex.sites_frame}
    check_scope_options(scope, as_user)  # a bad --scope is refused before any work
    if what == "rasters":
        _export_rasters(fmt, out_file or Path("rasters"), db, site, scope, as_user)
        return
    if what == "disclosure":
        from gmsense.outputs.disclosure import write_disclosure

        if fmt not in (None, "html"):
            raise InputError(f"export disclosure writes a folder of HTML and CSV (--format html), not {fmt!r}")
        store = Store(db, create=False)
        result = write_disclosure(store, out_file or Path("disclosure"), lang, cli_scope(store, scope, as_user))
        out.print(f"wrote the public disclosure to {result['folder']}: {result['violations']} confirmed "
                  f"violation(s), {result['restoration']} register polygon(s) (index.html, violations.csv, "
                  f"restoration.csv)", highlight=False, soft_wrap=True)
        return
    if what not in makers:
        raise InputError(f"cannot export {what!r}; choose one of: {', '.join([*makers, 'rasters', 'disclosure'])}")
    if site:
        raise InputError("--site selects licences for `export rasters` only")
    fmt = fmt or "geojson"
    out_file = out_file or Path("patches.geojson")
    check_target(out_file)  # a symlink, FIFO, device or folder is refused before any work
    if fmt != "corner-table":  # bad input is refused before the store is opened
        if fmt not in ex.FORMATS:
            raise InputError(f"unknown export format {fmt!r}; choose one of: "
                             f"{', '.join([*ex.FORMATS, 'corner-table'])}")
        ex.check_format(fmt, what)
    store = Store(db, create=False)  # reads only: never creates a store
    frame = makers[what](store, cli_scope(store, scope, as_user))
    nouns = {"patches": ("patch", "patches"), "flags": ("flag", "flags"),
             "recovery": ("recovery observation", "recovery observations"), "sites": ("licence", "licences")}
    if fmt == "corner-table":
        from gmsense.geo.corner_table import write_corner_table

        if not crs or what not in ("patches", "sites"):
            raise InputError("--format corner-table needs --crs (e.g. EPSG:4552) and exports patches or sites")
        path = write_corner_table(frame, out_file, crs, "patch_id" if what == "patches" else "site_id")
        out.print(f"wrote {plural(len(frame), *nouns[what])} to {path}", highlight=False, soft_wrap=True)
        return
    path = ex.write_frame(frame, out_file, fmt, what)
    style = " (QGIS style beside it: .qml)" if fmt == "gpkg" and ex.style_path(what) else ""
    out.print(f"wrote {plural(len(frame), *nouns[what])} to {path}{style}", highlight=False, soft_wrap=True)


def _export_rasters(fmt: str | None, out_dir: Path, db: str | None, sites: list[str] | None,
                    scope_text: str | None = None, as_user: str | None = None) -> None:
    """``gmsense export rasters``: COGs and a STAC catalogue (gmsense.outputs.rasters); with a scope, of
    its licences only (a --site outside it is refused as one the store does not hold)."""
    from gmsense.errors import InputError
    from gmsense.outputs.rasters import check_rasters_target, export_rasters
    from gmsense.review.exports import sites_in_scope
    from gmsense.store import Store

    if fmt not in (None, "cog"):
        raise InputError(f"export rasters writes Cloud-Optimized GeoTIFFs (--format cog), not {fmt!r}")
    check_rasters_target(out_dir)  # refused before the store is opened
    store = Store(db, create=False)  # reads only: never creates a store
    scope = cli_scope(store, scope_text, as_user)
    if not scope.everything:
        visible = sites_in_scope(store, scope)
        outside = [s for s in sites or [] if s not in visible]
        if outside:
            raise InputError(f"no licence {', '.join(map(repr, outside))} in the scope {scope}")
        if not visible:
            raise InputError(f"the store {store.location} holds no licence in the scope {scope}")
        sites = sites or visible
    with err.status("rasters") as status:
        result = export_rasters(store, out_dir, sites, progress=lambda site_id, done, total: status.update(
            f"rasters: licence {done + 1} of {total} ({site_id})" if site_id else "rasters: catalogue"))
    for site_id, why in result.skipped.items():
        err.print(f"[yellow]warning:[/] no rasters for {site_id}: {why}", highlight=False, soft_wrap=True)
    out.print(f"wrote rasters of {plural(len(result.licences), 'licence', 'licences')} "
              f"({plural(result.patches, 'patch', 'patches')}) and their STAC catalogue {result.catalog}",
              highlight=False, soft_wrap=True)


def _vector_driver(path: Path) -> str:
    """The GDAL vector driver for an output file name (GeoPackage unless it says otherwise)."""
    return {".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile"}.get(path.suffix.lower(), "GPKG")


def plural(n: int, singular: str, plural_form: str) -> str:
    """``n`` and the noun in the right number: "1 patch", "31 patches", "0 patches"."""
    return f"{n} {singular if n == 1 else plural_form}"


report_app = typer.Typer(help="Documents for inspectors and programme managers.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("site")
@user_errors
def report_site(
    site_id: Annotated[str, typer.Argument(help="the licence's site_id")],
    out_file: Annotated[Path, typer.Option("--out", help="PDF to write")],
    db: DbOption = None,
    lang: Annotated[str, typer.Option("--lang", help="en | zh (Simplified Chinese)")] = "en",
    unit: Annotated[str, typer.Option("--area-unit", help="ha | mu (1 mu = 666.67 m2)")] = "ha",
) -> None:
    """Per-licence inspection report (PDF): map, flagged patches with evidence, recovery, coordinates."""
    from gmsense.outputs.i18n import catalog
    from gmsense.outputs.site_report import write_site_report
    from gmsense.store import Store

    catalog(lang)  # an unknown language is a clear error before any work
    with err.status(f"report on {site_id}") as status:
        path = write_site_report(Store(db, create=False), site_id, out_file, lang, unit,  # never creates a store
                                 progress=lambda step: status.update(f"report on {site_id}: {step}"))
    out.print(f"wrote {path}", highlight=False, soft_wrap=True)


@report_app.command("summary")
@user_errors
def report_summary(
    out_file: Annotated[Path, typer.Option("--out", help=".pdf or .html to write")],
    by: Annotated[str, typer.Option("--by", help="county | city | mineral_class | province")] = "county",
    db: DbOption = None,
    lang: Annotated[str, typer.Option("--lang", help="en | zh (Simplified Chinese)")] = "en",
    unit: Annotated[str, typer.Option("--area-unit", help="ha | mu (1 mu = 666.67 m2)")] = "ha",
    scope: ScopeOption = None,
    as_user: AsUserOption = None,
) -> None:
    """Programme summary: disturbed and reclaimed area, flags, overdue reclamation, worst licences; with
    --scope or --as-user, of that scope's licences only (the ranking among them)."""
    from gmsense.outputs.i18n import catalog
    from gmsense.outputs.summary_report import write_summary_report
    from gmsense.store import Store

    catalog(lang)  # an unknown language is a clear error before any work
    check_scope_options(scope, as_user)  # and a bad --scope
    store = Store(db, create=False)  # never creates a store
    path = write_summary_report(store, out_file, by, lang, unit, cli_scope(store, scope, as_user))
    out.print(f"wrote {path}", highlight=False, soft_wrap=True)


@report_app.command("scorecards")
@user_errors
def report_scorecards(
    out_file: Annotated[Path, typer.Option("--out", help="CSV to write (per licence; _holders.csv, _years.csv and "
                                           ".md beside it)")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Green-survey scorecards: per licence and holder, disturbed area and trench/track length per km2 per year,
    share reclaimed by the deadline, confirmed violations, trend, and a ranking (formula in the .md)."""
    from gmsense.config import load_settings
    from gmsense.outputs.scorecards import FORMULA, write_scorecards
    from gmsense.store import Store

    written = write_scorecards(Store(db, create=False), out_file, load_settings(config))
    out.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    out.print(FORMULA, highlight=False, soft_wrap=True)


sites_app = typer.Typer(help="Licence areas: import registers, export corner tables.", no_args_is_help=True)
app.add_typer(sites_app, name="sites")


@sites_app.command("import")
@user_errors
def sites_import(
    table: Annotated[Path, typer.Argument(help="corner-point table, CSV or XLSX")],
    out_file: Annotated[Path, typer.Option("--out", help="licence areas to write (.gpkg or .geojson)")],
    fmt: Annotated[str, typer.Option("--format", help="corner-table")] = "corner-table",
    crs: Annotated[str | None, typer.Option(
        "--crs", help="EPSG:4490, 4513-4533 or 4534-4554; inferred if possible")] = None,
    attributes: Annotated[Path | None, typer.Option("--attributes", help="second table of licence attributes")] = None,
) -> None:
    """Import a CGCS2000 corner-point table (X northing, Y easting) as licence polygons."""
    from gmsense.errors import InputError
    from gmsense.geo.corner_table import read_corner_table
    from gmsense.geo.sites import read_sites

    if fmt != "corner-table":
        raise InputError(f"unknown import format {fmt!r}; choose corner-table")
    from gmsense.files import atomic_file, check_target

    frame = read_corner_table(table, crs=crs, attributes=attributes)
    with atomic_file(check_target(out_file)) as tmp:
        driver = _vector_driver(out_file)
        frame.to_file(tmp, engine="pyogrio", driver=driver, **({"layer": "sites"} if driver == "GPKG" else {}))
        sites = read_sites(tmp)
    out.print(f"wrote {plural(len(sites), 'licence', 'licences')} to {out_file} "
              f"(from {frame['source_crs'].iloc[0]})")
    described = sum(1 for s in sites if any(k in s.attrs for k in ("mineral", "mineral_class", "licence_type",
                                                                    "holder", "stated_area_m2")))
    if attributes is not None or described:
        out.print(f"attributes for {described} of {plural(len(sites), 'licence', 'licences')}"
                  + (f" (from {attributes})" if attributes is not None else ""))


@sites_app.command("export-table")
@user_errors
def sites_export_table(
    sites_file: Annotated[Path, typer.Argument(help="licence areas (GeoJSON, GeoPackage, Shapefile)")],
    out_file: Annotated[Path, typer.Option("--out", help="corner table to write (.csv)")],
    crs: Annotated[str, typer.Option("--crs", help="EPSG:4490 or a CGCS2000 Gauss-Kruger zone, e.g. EPSG:4552")],
) -> None:
    """Write licence areas back as a corner-point table for the bureau's own systems."""
    from gmsense.geo.corner_table import write_corner_table
    from gmsense.geo.sites import read_sites, sites_frame

    frame = sites_frame(read_sites(sites_file))
    out.print(f"wrote {write_corner_table(frame, out_file, crs)}")


@scans_app.command("list")
@user_errors
def scans_list(db: DbOption = None) -> None:
    """Past scans, newest last."""
    from gmsense.store import Store

    store = Store(db, create=False)  # reads only: a missing store is an error, never a new empty one
    out.print(f"store: {store.location}", highlight=False, soft_wrap=True)
    table = Table(title="scans")
    for col in ("id", "started (UTC)", "status", "source", "licences", "failed", "config"):
        table.add_column(col)
    for row in store.scans():
        sites = (row.summary or {}).get("sites", {})
        failed = sum(1 for v in sites.values() if v.get("error"))
        table.add_row(str(row.id), f"{row.started_at:%Y-%m-%d %H:%M:%S}", row.status, row.source,
                      str(row.params.get("n_sites", len(sites))), str(failed), row.config_hash)
    out.print(table)


@scans_app.command("show")
@user_errors
def scans_show(scan_id: Annotated[int, typer.Argument()], db: DbOption = None) -> None:
    """One scan: settings, per-licence results and failures."""
    from gmsense.errors import InputError
    from gmsense.store import Store

    store = Store(db, create=False)  # reads only: a missing store is an error, never a new empty one
    row, units = store.scan(scan_id)
    if row is None:
        raise InputError(f"there is no scan {scan_id} in the store {store.location}; see 'gmsense scans list'")
    out.print(f"scan {row.id}: {row.status}  source={row.source} detector={row.detector} config={row.config_hash} "
              f"gmsense={row.gmsense_version}\nstarted {row.started_at:%Y-%m-%d %H:%M:%S} finished "
              f"{row.finished_at:%Y-%m-%d %H:%M:%S}" if row.finished_at
              else f"scan {row.id}: {row.status} (not finished)")
    table = Table()
    for col in ("licence", "status", "patches", "flags", "coverage (licence / area)", "error"):
        table.add_column(col)
    for u in units:
        table.add_row(u.site_id, u.status, str(u.n_patches), str(u.n_flags), _coverage_cell(u.stats or {}),
                      u.error or "")
    out.print(table)
    for u in units:
        for key in ("coverage_warning", "imagery_warning"):
            if (u.stats or {}).get(key):
                out.print(f"[yellow]warning[/]: {u.site_id}: {u.stats[key]}", soft_wrap=True)


def _coverage_cell(stats: dict[str, Any]) -> str:
    """A licence's coverage for a table: observed shares of the licence and of its monitoring area,
    marked when under the threshold ("-" for results of versions that did not count it)."""
    if "coverage_licence" not in stats:
        return "-"
    cell = f"{stats['coverage_licence']:.1%} / {stats['coverage_area']:.1%}"
    return f"[yellow]{cell} low[/]" if stats.get("coverage_warning") else cell


#: The synthetic domains, for ``gmsense synth --help`` without importing the synthetic source (slow);
#: tests check it names every domain and modifier of gmsense.sources.synthetic.
SYNTH_DOMAIN_HELP = (
    "synthetic world (without it: the licence's synthetic_domain property, else the settings' synthetic.domain, "
    "default classic): classic, boreal_forest, steppe_grassland, cropland_plain, wetland or mountain_forest, with "
    "+modifiers: sensor s2 | s2_no_swir | landsat, pixel 10m | 20m | 30m, clouds clear | normal | cloudy, "
    "season shift+N | shift-N days (N <= 21), south (the southern calendar: dates half a year later; scan it "
    "with season months 11-3), coverN (the land cover and phenology redrawn from N, 1 <= N <= 999999, as "
    "domain randomisation does); e.g. boreal_forest+landsat+cloudy")


@app.command()
@user_errors
def synth(
    sites: Annotated[Path, typer.Option("--sites", help="licence areas")],
    out_dir: Annotated[Path, typer.Option("--out", help="output folder (GeoTIFF per date + truth.geojson)")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    preview: Annotated[bool, typer.Option("--preview", help="also write preview.png per licence")] = False,
    domain: Annotated[str | None, typer.Option("--domain", metavar="NAME", help=SYNTH_DOMAIN_HELP)] = None,
    config: ConfigOption = None,
) -> None:
    """Write synthetic scenes as a local GeoTIFF folder per licence, with their truth."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from gmsense.errors import InputError
    from gmsense.geo.sites import read_sites
    from gmsense.sources.synthetic import domain_named
    from gmsense.sources.synthetic.io import write_scenes

    settings = load_settings(config)
    if domain is not None:
        try:
            domain = domain_named(domain).name
        except ValueError as exc:
            raise InputError(f"--domain: {exc}") from None
    licences = read_sites(sites)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        tasks = {s.site_id: bar.add_task(f"synthesising {s.site_id}", total=None) for s in licences}

        def progress(site: Any, done: int, total: int) -> None:
            bar.update(tasks[site.site_id], completed=done, total=total)

        folders = write_scenes(licences, settings, out_dir, seed=seed, preview=preview, progress=progress,
                               domain=domain)
    for site, folder in zip(licences, folders, strict=True):
        out.print(f"{site.site_id}: {folder}", highlight=False, soft_wrap=True)


sources_app = typer.Typer(help="Imagery sources: are they reachable?", no_args_is_help=True)
app.add_typer(sources_app, name="sources")


@sources_app.command("check")
@user_errors
def sources_check(
    name: Annotated[str, typer.Argument(help="earthengine")],
    config: ConfigOption = None,
) -> None:
    """Say whether a source works from here: for earthengine, credentials, project and network."""
    from gmsense.errors import InputError

    if name != "earthengine":
        raise InputError(f"cannot check source {name!r}; only earthengine needs a check "
                         "(synthetic and local are offline)")
    from gmsense.sources.earthengine import check

    out.print(check(load_settings(config).earthengine), highlight=False)


app.add_typer(cli_review.review_app, name="review")
app.add_typer(cli_review.users_app, name="users")
app.add_typer(cli_review.notify_app, name="notify")
app.add_typer(cli_review.labels_app, name="labels")
app.add_typer(cli_restoration.register_app, name="register")
app.add_typer(cli_restoration.zones_app, name="zones")
app.add_typer(cli_restoration.restoration_app, name="restoration")
app.add_typer(licences_app, name="licences")
app.add_typer(layers_app, name="layers")
app.add_typer(assessments_app, name="assessments")
app.add_typer(divisions_app, name="divisions")


if __name__ == "__main__":  # pragma: no cover
    app()
