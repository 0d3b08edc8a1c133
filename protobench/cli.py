"""The ``protobench`` command.

Bad input (unknown names, impossible episode specs, missing data, NaN features)
prints one ``error:`` line naming the fix and exits with code 2; nothing is
written to the leaderboard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from protobench.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark harness for prototype-based learning.")
board_app = typer.Typer(no_args_is_help=True, help="Show and export leaderboards.")
app.add_typer(board_app, name="leaderboard")
SEEDS_HELP = ("several seeds: 0,1,2 or 0-4 or a count N (--seed..--seed+N-1); the row holds "
              "the mean and a Student-t 95% CI over seeds")
out = Console()
err = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UserError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict, values read as YAML scalars (``5`` -> 5, ``true`` -> True)."""
    opts: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects key=value, got {item!r}")
        opts[key.replace("-", "_")] = yaml.safe_load(value) if value else ""
    return opts


@app.command()
@user_errors
def fewshot(
    dataset: str = typer.Option(..., "--dataset", "-d", help="registered dataset name"),
    method: str = typer.Option("protonet", "--method", "-m"),
    ways: int = typer.Option(5, "--ways", "-n"),
    shots: list[int] = typer.Option([1], "--shots", "-k", help="repeat to evaluate several"),
    queries: int = typer.Option(15, "--queries", "-q"),
    episodes: int = typer.Option(1000, "--episodes", "-e"),
    seed: int = typer.Option(0, "--seed"),
    seeds: str | None = typer.Option(None, "--seeds", help=SEEDS_HELP),
    split: str | None = typer.Option(None, "--split", help="evaluated split (default test)"),
    train_steps: int | None = typer.Option(None, "--train-steps"),
    train_ways: int | None = typer.Option(None, "--train-ways"),
    train_shots: int | None = typer.Option(None, "--train-shots",
                                              help="one model for every --shots"),
    train_queries: int | None = typer.Option(None, "--train-queries"),
    backbone: str | None = typer.Option(None, "--backbone"),
    clip_model: str | None = typer.Option(None, "--clip-model",
                                          help="proto-clip: open_clip model (RN50, ViT-B-32, "
                                               "... or a model-config JSON)"),
    pretrained: str | None = typer.Option(None, "--pretrained",
                                          help="proto-clip: open_clip weights tag (openai), "
                                               "a checkpoint file, or none"),
    metric: str | None = typer.Option(None, "--metric",
                                      help="sqeuclidean|euclidean|cosine|geodesic"),
    metric_option: list[str] | None = typer.Option(
        None, "--metric-option", help="geodesic option key=value, repeatable (mode=geo_pool|"
        "geo_trans|geo_class, pool=train|test, landmarks, bandwidth, k, t, m, ...)"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    data_root: Path | None = typer.Option(None, "--data-root"),
    dataset_option: list[str] | None = typer.Option(None, "--dataset-option", "-o",
                                                       help="key=value, repeatable"),
    train_dataset: str | None = typer.Option(None, "--train-dataset",
                                                help="NAME[:SPLIT] to train on"),
    train_option: list[str] | None = typer.Option(None, "--train-option"),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                              help="method parameter key=value"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint",
                                              help="load a trained method, skip training"),
    save_checkpoint: Path | None = typer.Option(None, "--save-checkpoint"),
    save_episodes: Path | None = typer.Option(None, "--save-episodes",
                                                 help="folder for episode manifests"),
    episodes_file: Path | None = typer.Option(None, "--episodes-file",
                                                 help="replay a saved manifest"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    no_progress: bool = typer.Option(False, "--no-progress"),
    feature_cache: bool = typer.Option(True, "--feature-cache/--no-feature-cache",
                                       help="reuse cached features of an unchanged encoder"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir",
                                          help="feature cache folder "
                                               "(default $PROTOBENCH_CACHE/features)"),
    config: str | None = typer.Option(
        None, "--config", "-c", help="method preset: NAME, best (the dataset's), defaults "
        "(the card's); default: the dataset's preset when there is one"),
    allow_class_overlap: bool = typer.Option(
        False, "--allow-class-overlap",
        help="allow meta-train data that share classes with the evaluated split (recorded)"),
) -> None:
    """Train (when needed) and evaluate a few-shot method; write leaderboard rows."""
    from protobench.report.console import fewshot_table
    from protobench.tasks.base import parse_seeds
    from protobench.tasks.fewshot import FewShotConfig, run_fewshot

    cfg = FewShotConfig(
        dataset=dataset, method=method, ways=ways, shots=tuple(shots), queries=queries,
        episodes=episodes, seed=seed, seeds=parse_seeds(seeds, seed), split=split,
        metric=metric, backbone=backbone,
        train_steps=train_steps, train_ways=train_ways, train_shots=train_shots,
        train_queries=train_queries, device=device,
        data_root=str(data_root) if data_root else None,
        dataset_options=parse_options(dataset_option, "--dataset-option"),
        train_dataset=train_dataset, train_options=parse_options(train_option, "--train-option"),
        method_params=parse_options(param, "--param"),
        metric_options=parse_options(metric_option, "--metric-option"),
        clip_model=clip_model, pretrained=pretrained,
        checkpoint=str(checkpoint) if checkpoint else None,
        save_checkpoint=str(save_checkpoint) if save_checkpoint else None,
        save_episodes=str(save_episodes) if save_episodes else None,
        episodes_file=str(episodes_file) if episodes_file else None,
        store=str(store), progress=not no_progress, feature_cache=feature_cache,
        cache_dir=str(cache_dir) if cache_dir else None,
        allow_class_overlap=allow_class_overlap, config=config,
    )
    outcomes = run_fewshot(cfg)
    out.print(fewshot_table(f"{outcomes[0].record.board} - {method}", outcomes))
    out.print(f"wrote {len(outcomes)} row(s) to {store} (board {outcomes[0].record.board})")


@app.command()
@user_errors
def continual(
    dataset: str = typer.Option(..., "--dataset", "-d", help="registered dataset name"),
    method: str = typer.Option("finetune", "--method", "-m"),
    experiences: int = typer.Option(5, "--experiences", "-t", help="number of experiences"),
    base_classes: int | None = typer.Option(None, "--base-classes",
                                               help="classes of a larger first experience"),
    class_order: str = typer.Option("seed", "--class-order", help="seed|pass|efc|natural"),
    num_classes: int | None = typer.Option(None, "--classes",
                                              help="use the first N classes of the order"),
    epochs: int | None = typer.Option(None, "--epochs", help="epochs per experience"),
    seed: int = typer.Option(0, "--seed"),
    seeds: str | None = typer.Option(None, "--seeds", help=SEEDS_HELP),
    backbone: str | None = typer.Option(None, "--backbone"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    data_root: Path | None = typer.Option(None, "--data-root"),
    dataset_option: list[str] | None = typer.Option(None, "--dataset-option", "-o",
                                                       help="key=value, repeatable"),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                              help="method parameter key=value"),
    test_fraction: float = typer.Option(0.2, "--test-fraction",
                                        help="held-out samples per class (no test split)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="checkpoints, plot, result"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    no_progress: bool = typer.Option(False, "--no-progress"),
    ood_score: str | None = typer.Option(None, "--ood-score",
                                            help="open world: score unseen classes as OOD "
                                                 "after each experience (e.g. knn, msp)"),
    ood_score_param: list[str] | None = typer.Option(None, "--ood-score-param",
                                                        help="score parameter key=value"),
    config: str | None = typer.Option(
        None, "--config", "-c", help="method preset: NAME, best (the dataset's), defaults "
        "(the card's); default: the dataset's preset when there is one"),
) -> None:
    """Train a method on a class-incremental stream; print the accuracy matrix, write a row."""
    from protobench.report.console import (
        matrix_table,
        metrics_table,
        open_world_table,
        seeds_table,
    )
    from protobench.tasks.base import parse_seeds
    from protobench.tasks.continual import ContinualConfig, run_continual_job

    cfg = ContinualConfig(
        dataset=dataset, method=method, experiences=experiences, base_classes=base_classes,
        class_order=class_order, num_classes=num_classes, seed=seed,
        seeds=parse_seeds(seeds, seed), epochs=epochs,
        backbone=backbone, device=device, data_root=str(data_root) if data_root else None,
        dataset_options=parse_options(dataset_option, "--dataset-option"),
        method_params=parse_options(param, "--param"), test_fraction=test_fraction,
        run_dir=str(run_dir) if run_dir else None, resume=resume, store=str(store),
        progress=not no_progress, ood_score=ood_score,
        ood_score_params=parse_options(ood_score_param, "--ood-score-param"), config=config,
    )

    def report(t: int, acc: Any) -> None:
        seen = acc[t, :t + 1]
        err.print(f"experience {t + 1}/{acc.shape[0]} done: mean accuracy over seen "
                  f"experiences {100 * float(seen.mean()):.2f}%", highlight=False)

    job = run_continual_job(
        cfg, on_experience_end=report,
        on_warning=lambda text: err.print(f"[yellow]warning:[/] {text}", highlight=False))
    for run in job.runs:
        outcome = run.outcome
        title = f"{outcome.record.board} - {method}" + (
            f" (seed {outcome.record.seed})" if len(job.seeds) > 1 else "")
        out.print(matrix_table(outcome, title + ": accuracy % after experience i (rows) on "
                                        "experience j"))
        out.print(metrics_table(outcome))
        if ood_score is not None:
            out.print(open_world_table(outcome))
    row = job.records[0]
    if len(job.seeds) > 1:
        out.print(seeds_table(row))
    out.print(f"run folder {job.run_dir}")
    out.print(f"wrote 1 row to {store} (board {row.board})")


@app.command()
@user_errors
def ood(
    id_set: str = typer.Option(..., "--id", help="ID dataset NAME[:CLASSES], e.g. digits:0-4"),
    ood_sets: str = typer.Option(..., "--ood", help="OOD sets, comma-separated, e.g. svhn,textures"),
    method: str = typer.Option("ce", "--method", "-m", help="ce | palm"),
    score: str | None = typer.Option(None, "--score", "-s",
                                        help="comma-separated scores (default: the method's)"),
    epochs: int | None = typer.Option(None, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    seeds: str | None = typer.Option(None, "--seeds", help=SEEDS_HELP),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    backbone: str | None = typer.Option(None, "--backbone"),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                              help="method parameter key=value"),
    score_param: list[str] | None = typer.Option(None, "--score-param",
                                                    help="score parameter key=value (e.g. k=100)"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint",
                                              help="load a trained method, skip training"),
    save_checkpoint: Path | None = typer.Option(None, "--save-checkpoint"),
    data_root: Path | None = typer.Option(None, "--data-root", help="folder of the ID dataset"),
    ood_root: list[str] | None = typer.Option(None, "--ood-root",
                                                 help="NAME=FOLDER of an OOD dataset, repeatable"),
    dataset_option: list[str] | None = typer.Option(None, "--dataset-option", "-o",
                                                       help="ID loader key=value, repeatable"),
    test_fraction: float = typer.Option(0.2, "--test-fraction",
                                        help="held-out ID samples per class (no test split)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="folder for roc.png, result"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    no_progress: bool = typer.Option(False, "--no-progress"),
    config: str | None = typer.Option(
        None, "--config", "-c", help="method preset: NAME, best (the dataset's), defaults "
        "(the card's); default: the dataset's preset when there is one"),
) -> None:
    """Train (or load) an ID model, score ID vs OOD sets; print the table, write rows."""
    from protobench.evaluation.stats import mean_ci95
    from protobench.report.console import results_table
    from protobench.tasks.base import parse_seeds
    from protobench.tasks.ood import OODConfig, run_ood

    cfg = OODConfig(
        id=id_set, ood=ood_sets, method=method,
        scores=tuple(s.strip() for s in (score or "").split(",") if s.strip()),
        epochs=epochs, seed=seed, seeds=parse_seeds(seeds, seed), device=device,
        backbone=backbone,
        method_params=parse_options(param, "--param"),
        score_params=parse_options(score_param, "--score-param"),
        checkpoint=str(checkpoint) if checkpoint else None,
        save_checkpoint=str(save_checkpoint) if save_checkpoint else None,
        data_root=str(data_root) if data_root else None,
        ood_roots={k: str(v) for k, v in parse_options(ood_root, "--ood-root").items()},
        dataset_options=parse_options(dataset_option, "--dataset-option"),
        test_fraction=test_fraction, run_dir=str(run_dir) if run_dir else None,
        store=str(store), progress=not no_progress, config=config,
    )
    res = run_ood(cfg)
    acc, ci = mean_ci95([e.id_accuracy for e in res.per_seed])
    out.print(f"ID {id_set}: accuracy {100 * acc:.2f}%" + (f" ± {100 * ci:.2f}" if ci else "")
              + f" ({res.per_seed[0].id_accuracy_source})", highlight=False)
    for s in res.scores:
        out.print(results_table(f"ood/{res.records[0].dataset} - {method}", s, res.per_seed,
                                res.groups, res.counts))
    out.print("FPR95 ID+ = OOD accepted at 95% ID recall (PALM/KNN/CIDER); FPR95 OOD+ = ID "
              "rejected at 95% OOD recall (OpenOOD v1.5, pytorch-ood)", highlight=False)
    out.print(f"run folder {res.run_dir} (ROC {res.plot.name if res.plot else '-'})")
    out.print(f"wrote {len(res.records)} row(s) to {store} (board {res.records[0].board})")


@app.command()
@user_errors
def datasets(
    pattern: str | None = typer.Argument(None, help="e.g. 'cifar*'; omit for all"),
) -> None:
    """List registered datasets and their splits."""
    from protobench.report.listing import datasets_table

    out.print(datasets_table(pattern))


@app.command()
@user_errors
def methods(
    name: str | None = typer.Argument(
        None, help="one method: its parameters, capabilities, job options and presets"),
) -> None:
    """List registered methods, their tasks and distances; with NAME, describe one method."""
    from protobench.report.listing import method_details, methods_table

    out.print(methods_table() if name is None else method_details(name))


@app.command()
@user_errors
def presets(method: str | None = typer.Argument(None, help="one method; omit for all")) -> None:
    """List the methods' versioned presets (--config NAME) and the data each was chosen on."""
    from protobench.methods import get_method_class, list_methods
    from protobench.report.listing import presets_table

    names = [get_method_class(method).name] if method else [c.name for c in list_methods()]
    out.print(presets_table(names))


@app.command("list")
@user_errors
def list_registry(
    kind: str = typer.Argument(..., help="methods | datasets | scores | metrics | backbones"),
    pattern: str | None = typer.Argument(None, help="fnmatch pattern, e.g. '*proto*'; a "
                                         "plain word matches as a substring"),
) -> None:
    """List the registered names of one kind, optionally matching PATTERN."""
    from protobench.registry import registry
    from protobench.report.listing import kind_table

    reg = registry(kind)
    if not reg.names(pattern):
        raise UserError(f"no {reg.kind} matches {pattern!r}; `protobench list {kind}` shows "
                        f"all {len(reg)}")
    out.print(kind_table(kind, pattern))


@app.command()
@user_errors
def sweep(
    grid_file: Path = typer.Argument(..., help="grid YAML (see benchmarks/grids/)"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="workers (local processes, ray tasks, "
                             "slurm array parallelism)"),
    executor: str = typer.Option("local", "--executor", help="local|ray|slurm"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    resume: bool = typer.Option(False, "--resume", help="finish an interrupted grid"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run failed cells again"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the cells, run nothing"),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="an existing Ray cluster (default: local)"),
    slurm_option: list[str] | None = typer.Option(
        None, "--slurm-option", help="submitit/SLURM key=value (partition, time, gpus, cpus, "
        "mem, or slurm_* keys), repeatable"),
    revision_policy: str = typer.Option("version", "--revision-policy",
                                        help="cell keys include: version | git (+revision)"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="KEY=VALUE replacing a cell field in every cell (e.g. "
        "episodes=20 for a smoke run; the cells' keys change with it), repeatable"),
) -> None:
    """Run every cell of a grid (methods x datasets x settings x seeds); skip done cells."""
    from protobench.sweep import load_grid, make_executor, pending, run_sweep, validate
    from protobench.tasks.base import runs_root
    from protobench.tasks.store import ResultStore

    overrides = parse_options(set_, "--set")
    grid = validate(load_grid(grid_file, revision_policy, overrides), revision_policy)
    todo, skipped = pending(grid, ResultStore(store), retry_failed)
    if dry_run:
        table = Table(title=f"grid {grid.name}: {len(grid.cells)} cells ({skipped} done or "
                            f"failed in {store}, {len(todo)} to run)")
        for col in ("#", "cell", "key", "status"):
            table.add_column(col, overflow="fold")
        waiting = {c.key for c in todo}
        for i, c in enumerate(grid.cells, 1):
            table.add_row(str(i), c.describe(), c.key[:12],
                          "to run" if c.key in waiting else "skip")
        out.print(table)
        out.print(f"{len(grid.cells)} cells", highlight=False)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    counts = {"done": 0, "failed": 0}
    slurm = parse_options(slurm_option, "--slurm-option") if slurm_option else None
    ex = make_executor(executor, jobs, ray_address=ray_address, slurm=slurm,
                       folder=runs_root() / "sweep" / grid.name / "executor")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, transient=False) as bar:
            task_id = bar.add_task(grid.name, total=len(todo))

            def event(kind: str, cell: Any, outcome: Any) -> None:
                if kind == "start":
                    return
                counts[kind] += 1
                running = min(jobs, len(todo) - counts["done"] - counts["failed"])
                bar.update(task_id, advance=1, description=(
                    f"{grid.name}: {counts['done']} done, {running} running, "
                    f"{counts['failed']} failed"))
                if kind == "failed":
                    err.print(f"[red]failed:[/] {cell.describe()}: {outcome.error}",
                              highlight=False)

            summary = run_sweep(grid, store, ex, resume=resume, retry_failed=retry_failed,
                                on_event=event)
    finally:
        ex.close()
    out.print(f"grid {grid.name}: {len(summary.done)} cells run, {summary.skipped} skipped "
              f"(already in {store}), {len(summary.failed)} failed, "
              f"{len(summary.row_ids)} rows written in {summary.seconds:.1f} s", highlight=False)
    sweep_summary(store, grid)
    if summary.failed:
        out.print(f"failed cells ({len(summary.failed)}):", highlight=False)
        by_key = {c.key: c for c in grid.cells}
        for key, text in summary.failed.items():
            out.print(f"  {by_key[key].describe()} [{key[:12]}]: {text}", highlight=False)
        again = "".join(f" --set {item}" for item in set_ or [])
        out.print(f"re-run them with: protobench sweep {grid_file} --store {store}{again} "
                  "--retry-failed", highlight=False)
        raise typer.Exit(1)


def sweep_summary(store: Path, grid: Any) -> None:
    """One table per board of the grid's rows, aggregated over seeds."""
    from protobench.leaderboard.aggregate import aggregate_rows
    from protobench.leaderboard.aggregate import table as aggregate_table
    from protobench.tasks.store import ResultStore

    rs = ResultStore(store)
    ids = {i for v in rs.cells(grid.name).values() for i in v["row_ids"]}
    rows = [r for r in rs.records() if r.id in ids]
    for board in sorted({r.board for r in rows}):
        groups = aggregate_rows([r for r in rows if r.board == board])
        out.print(aggregate_table(board, groups))


@app.command()
@user_errors
def rerun(
    row_id: int = typer.Argument(..., help="the row id (`protobench leaderboard show BOARD`)"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    run_dir: Path | None = typer.Option(None, "--run-dir",
                                        help="folder of the re-run (default runs/rerun/rowN)"),
    write: bool = typer.Option(False, "--write", help="also store the re-run's row"),
) -> None:
    """Re-run a stored row with exactly its method parameters, data and seeds; compare."""
    from protobench.tasks.base import matching_record
    from protobench.tasks.base import rerun as rerun_row
    from protobench.tasks.store import ResultStore

    original = ResultStore(store).get(row_id)
    job = rerun_row(original, run_dir, str(store) if write else None)
    again = matching_record(job, original)
    key = original.primary_metric
    before, after = original.metrics[key].value, again.metrics[key].value
    same = before == after
    out.print(f"row {row_id} ({original.board}, {original.method}, {original.setting}): "
              f"{key} stored {before!r}, re-run {after!r}: "
              + ("reproduced exactly" if same else f"differs by {after - before:+.3g}"),
              highlight=False)
    if not same:
        raise typer.Exit(1)


@app.command()
@user_errors
def compare(
    board: str = typer.Argument(..., help="e.g. fewshot/digits"),
    a: str = typer.Argument(..., help="method or variant: ncm, protonet[metric=geodesic]"),
    b: str = typer.Argument(..., help="the method or variant A is compared with"),
    setting: list[str] | None = typer.Option(
        None, "--setting", help="KEY=VALUE: only that setting (repeatable), e.g. shots=1"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    metric: str | None = typer.Option(None, "--metric", help="default: the primary metric"),
) -> None:
    """Paired comparison of A and B: per episode on the same episodes (few-shot), per seed
    on the same streams (continual, OOD); t-test, Wilcoxon, win rate, verdict."""
    from rich.markup import escape

    from protobench.leaderboard.compare import compare_board
    from protobench.tasks.store import ResultStore

    try:
        report = compare_board(ResultStore(store), board, a, b,
                               parse_options(setting, "--setting"), metric)
    except UserError as exc:  # variants' [key=value] are not rich markup
        raise UserError(escape(str(exc))) from None
    out.print(report.table())
    for line in report.lines():
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@board_app.command("show")
@user_errors
def board_show(
    board: str | None = typer.Argument(None, help="e.g. fewshot/omniglot; omit to list"),
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    aggregate: bool = typer.Option(False, "--aggregate",
                                   help="one line per configuration: mean ± t CI over seeds"),
) -> None:
    """Print a board's ranked table (or the list of boards)."""
    from protobench.leaderboard.render import console_cells, headers, notes, ranked_rows
    from protobench.tasks.store import ResultStore

    rs = ResultStore(store)
    boards = rs.boards()
    if board is None:
        for b in boards:
            out.print(b)
        return
    if board not in boards:
        raise UserError(f"no board {board!r} in {store}; boards: {', '.join(boards) or 'none'}")
    if aggregate:
        from protobench.leaderboard import aggregate as agg

        groups = agg.aggregate_rows(rs.records(board))
        out.print(agg.table(board, groups))
        for line in agg.notes(groups, markdown=False):
            out.print(line, highlight=False, markup=False)
        return
    table = Table(title=board)
    rows = ranked_rows(rs.records(board))
    for col in headers(rows, console=True):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*console_cells(r))
    out.print(table)
    for line in notes(rows, markdown=False):
        out.print(line, highlight=False, markup=False)


@board_app.command("export")
@user_errors
def board_export(
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    out_dir: Path = typer.Option(Path("leaderboards"), "--out"),
) -> None:
    """Write every board as Markdown and CSV (and an index) into a folder."""
    from protobench.leaderboard.render import export
    from protobench.tasks.store import ResultStore

    for path in export(ResultStore(store), out_dir):
        out.print(f"wrote {path}")


@board_app.command("site")
@user_errors
def board_site(
    store: Path = typer.Option(Path("leaderboards/results.sqlite"), "--store"),
    out_dir: Path = typer.Option(Path("leaderboards/site"), "--out",
                                 help="the site folder (replaced; open its index.html)"),
    matrix_row: int | None = typer.Option(None, "--matrix-row",
                                          help="the continual row whose accuracy matrix "
                                               "is drawn (default: each board's best)"),
) -> None:
    """Write a static HTML site of every board: sortable tables, plots, provenance."""
    from protobench.leaderboard.site import build_site

    res = build_site(store, out_dir, matrix_row=matrix_row)
    out.print(f"wrote {len(res.pages)} pages ({res.boards} boards, {res.rows} rows, "
              f"{res.configurations} configurations, {res.figures} figures) to {res.out} in "
              f"{res.seconds:.1f} s; open {res.out / 'index.html'}", highlight=False)


def _benchmarks_folder() -> Path | None:
    """The ``benchmarks`` package of a source checkout: importable, in the working directory,
    or next to this package (an editable install)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("benchmarks")
    except (ImportError, ValueError):
        spec = None
    found = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in (*found, Path.cwd() / "benchmarks", Path(__file__).resolve().parents[1]
                   / "benchmarks"):
        if (folder / "_harness.py").is_file():
            return folder
    return None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def bench(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="a benchmark; omit to list them"),
    quick: bool = typer.Option(False, "--quick", help="smoke run"),
    out_dir: Path | None = typer.Option(None, "--out", help="folder for the JSON + Markdown"),
) -> None:
    """Run a benchmark: python -m benchmarks.NAME (source checkout); other flags go to it."""
    import ast
    import os
    import subprocess
    import sys

    from rich.markup import escape

    folder = _benchmarks_folder()
    if folder is None:
        raise UserError("no benchmarks package here: run protobench bench from a source "
                        "checkout (the repository root)")
    names = {p.stem: " ".join((ast.get_docstring(ast.parse(p.read_text())) or "")
                              .split("\n\n")[0].split())
             for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")}
    listing = "\n".join(f"  {n:20s} {doc}" for n, doc in names.items())
    if name is None:
        out.print(f"benchmarks in {folder}:\n{listing}", highlight=False, markup=False,
                  soft_wrap=True)
        return
    if name not in names:
        raise UserError(f"unknown benchmark {name!r}; available:\n{escape(listing)}")
    argv = [*(["--quick"] if quick else []), *(["--out", str(out_dir)] if out_dir else []),
            *ctx.args]
    paths = [str(folder.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    rc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *argv], env=env).returncode
    raise typer.Exit(rc)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
