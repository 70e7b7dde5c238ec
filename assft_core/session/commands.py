"""`assft` sub-commands of the session: init, import, status, query, approve, reject, swap, label, job.

Project argument: `init PROJECT` names the folder to create; every other command acts on an
existing project given by `-p/--project DIR`, default `$ASSFT_PROJECT`, else the current folder
(so `cd my_project && assft status` works). Exit codes: 0 ok, 1 user error (message, no
traceback), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from assft_core.config import ProjectConfig, from_dict
from assft_core.data.records import Severity
from assft_core.errors import StateError
from assft_core.session import jobs, labels, rounds
from assft_core.session.pick_words import pick_sentence
from assft_core.session.project import (
    Project,
    create_project,
    import_dataset_into,
    open_project,
    problems_from_json,
)
from assft_core.session.store import reading

PROJECT_ENV = "ASSFT_PROJECT"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the session's sub-commands to `assft`."""
    p = sub.add_parser("init", help="create a project from a dataset folder and a model",
                       description="Create a project folder (store + artifacts) and import the dataset.")
    p.add_argument("project", metavar="PROJECT", help="new (or empty) project folder")
    p.add_argument("--dataset", required=True, metavar="DIR", help="dataset folder (pairs, MSD or nnU-Net v2)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-config", metavar="FILE", help="model-config file (copied into the project)")
    model.add_argument("--model", metavar="DIR", help="model folder (checkpoint + model card)")
    p.add_argument("--oracle", action="store_true",
                   help="demo/benchmark mode: pool labels come from the dataset's reference labels")
    p.add_argument("--config", metavar="JSON", help="project settings file (ProjectConfig as JSON)")
    p.add_argument("--budget", type=int, help="cases proposed per round (default from settings: 2)")
    p.add_argument("--rounds", type=int, help="planned rounds (default from settings: 5)")
    p.add_argument("--strategy", help="query strategy (default from settings: assft)")
    p.add_argument("--cache-limit", type=float, metavar="GB",
                   help="largest size of the preprocessing cache in GB; least recently used entries are deleted")
    p.add_argument("--classes", nargs="+", metavar="K|NAME",
                   help="classes of a plain-folder dataset: K (background + K-1 classes) or the names in index order, "
                   "background first (default: the model card's); MSD / nnU-Net datasets declare theirs")
    p.set_defaults(func=_init)

    p = with_project_option(sub.add_parser("import", help="import (or re-import) a dataset folder into the project"))
    p.add_argument("--dataset", required=True, metavar="DIR", help="dataset folder")
    p.set_defaults(func=_import)

    p = with_project_option(sub.add_parser("status", help="cases by site and split, labels, round state, jobs"))
    p.set_defaults(func=_status)

    p = with_project_option(sub.add_parser(
        "cache", help="size of the preprocessing cache, and its limit (least recently used entries deleted)",
        description="Shows the preprocessing cache's size per case; --limit GB keeps it under GB (10^9 bytes) from "
        "now on, deleting the entries used longest ago (a deleted entry is preprocessed again when needed)."))
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--limit", type=float, metavar="GB", help="set the cache limit in GB and prune to it now")
    limit.add_argument("--no-limit", action="store_true", help="remove the cache limit")
    p.set_defaults(func=_cache)

    p = with_project_option(sub.add_parser("query", help="propose picks for the scored round with a strategy"))
    p.add_argument("--strategy", help="strategy name (default: the project's)")
    p.add_argument("--budget", type=int, help="picks wanted this round (default: the project's)")
    p.set_defaults(func=_query)

    p = with_project_option(sub.add_parser("approve", help="approve pending picks of the current round"))
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="approve every pending pick")
    which.add_argument("cases", nargs="*", default=[], metavar="CASE", help="case ids to approve")
    p.set_defaults(func=_approve)

    p = with_project_option(sub.add_parser(
        "next-round", help="open the next round once the current one is evaluated",
        description="Start round t + 1 after round t is evaluated; then `assft score` scores the pool with f_{t+1}."))
    p.set_defaults(func=_next_round)

    p = with_project_option(sub.add_parser("reject", help="reject a pick (excluded for the rest of the round)"))
    p.add_argument("case", metavar="CASE")
    p.set_defaults(func=_reject)

    p = with_project_option(sub.add_parser("swap", help="reject a pick and get the strategy's next best case"))
    p.add_argument("case", metavar="CASE")
    p.set_defaults(func=_swap)

    p = with_project_option(sub.add_parser(
        "label", help="store an expert label file for a case, or --oracle labels (demo mode)",
        description="`label CASE FILE` validates FILE against the case's image and stores a copy as a "
        "new version; `label --oracle [CASE...]` labels approved picks from the dataset (demo mode)."))
    p.add_argument("--oracle", action="store_true", help="use the dataset's reference labels")
    p.add_argument("args", nargs="*", metavar="CASE_OR_FILE",
                   help="one CASE and its label FILE (one case per command), or with --oracle: zero or more CASEs "
                        "(none: every approved pick)")
    p.set_defaults(func=_label, usage_error=p.error)

    job = sub.add_parser("job", help="list, cancel, resume or run background jobs")
    job_sub = job.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    p = with_project_option(job_sub.add_parser("list", help="jobs, newest first (dead ones detected)"))
    p.set_defaults(func=_job_list)
    for name, func, text in (
        ("cancel", _job_cancel, "cancel a queued or running job"),
        ("resume", _job_resume, "resume a dead, failed or cancelled job from its last checkpoint"),
        ("run", _job_run, "run a queued job in this process (what detached jobs execute)"),
    ):
        p = with_project_option(job_sub.add_parser(name, help=text))
        p.add_argument("job_id", type=int, metavar="JOB_ID")
        p.set_defaults(func=func)


def with_project_option(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `-p/--project DIR` (default $ASSFT_PROJECT, else the current folder) to a sub-command."""
    p.add_argument("-p", "--project", metavar="DIR", default=None,
                   help=f"project folder (default: ${PROJECT_ENV}, else the current folder)")
    return p


def project_from_args(args: argparse.Namespace) -> Project:
    """Open the project a sub-command names (`--project`, $ASSFT_PROJECT, else the current folder).

    Raises:
        StateError: when that folder is not a project.
    """
    return open_project(args.project or os.environ.get(PROJECT_ENV) or Path.cwd())


def _init(args: argparse.Namespace) -> int:
    cfg = ProjectConfig()
    if args.config:
        try:
            cfg = from_dict(ProjectConfig, json.loads(Path(args.config).read_text()))
        except (OSError, ValueError) as exc:
            raise StateError(f"settings file {args.config}: {exc}") from None
    if args.cache_limit is not None and args.cache_limit < 0:
        raise StateError(f"--cache-limit {args.cache_limit}: give a size in GB ≥ 0.")
    for field, value in (
        ("budget", args.budget), ("planned_rounds", args.rounds), ("strategy", args.strategy),
        ("cache_limit_gb", args.cache_limit),
    ):
        if value is not None:
            setattr(cfg, field, value)
    model = args.model_config or args.model
    classes = parse_classes(args.classes) if args.classes else None
    project = create_project(args.project, args.dataset, model, config=cfg, oracle=args.oracle, classes=classes)
    print(f"created project {project.folder}")
    _print_cases(project)
    from assft_core.errors import ModelError
    from assft_core.session.workspace import model_fit_warnings

    try:
        warnings = model_fit_warnings(project)
    except ModelError as exc:  # the project exists; scoring will refuse the card with the same message
        warnings = [f"the model card could not be read, so its spacing and modality were not compared: {exc}"]
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


def parse_classes(values: list[str]) -> dict[int, str]:
    """`--classes`: ["K"] -> {0: "background", 1: "class_1", ...}; names -> {0: names[0], ...}.

    Raises:
        StateError: K < 2, or fewer than two names.
    """
    if len(values) == 1 and values[0].isdigit():
        k = int(values[0])
        if k < 2:
            raise StateError(f"--classes {k}: give at least 2 (background and one structure).")
        return {0: "background", **{i: f"class_{i}" for i in range(1, k)}}
    if len(values) < 2:
        raise StateError(f"--classes {values}: give K, or at least two names (background first).")
    return dict(enumerate(values))


def _import(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    summary = import_dataset_into(project, args.dataset)
    print(f"{len(summary.added)} new, {len(summary.updated)} updated, {len(summary.unusable)} unusable case(s)")
    if summary.unusable:
        print("unusable (see `assft status`): " + ", ".join(summary.unusable))
    return 0


def _cache(args: argparse.Namespace) -> int:
    import dataclasses

    from assft_core.session.cache import cache_usage, prune_cache, too_small_note
    from assft_core.session.project import save_config
    from assft_core.session.workspace import PREPROCESS_CACHE, cache_limit_bytes

    project = project_from_args(args)
    if args.limit is not None and args.limit < 0:
        raise StateError(f"--limit {args.limit}: give a size in GB ≥ 0.")
    if args.limit is not None or args.no_limit:
        project = save_config(project, dataclasses.replace(project.config, cache_limit_gb=None if args.no_limit else args.limit))
    folder = project.artifact_path(*PREPROCESS_CACHE)
    limit = cache_limit_bytes(project)
    before = cache_usage(folder, limit)
    if limit is not None:
        removed = prune_cache(folder, limit)
        if removed:
            print(f"deleted {len(removed)} least recently used cache entr{'y' if len(removed) == 1 else 'ies'}")
    after = cache_usage(folder, limit)
    # An emptied cache no longer knows its entries' size: the note takes it from before the pruning.
    print(after.describe() + ("" if after.entries else too_small_note(limit, before.per_entry_bytes)))
    return 0


def _status(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    print(f"project {project.folder}  (mode: {'oracle/demo' if project.oracle else 'expert labels'})")
    _print_cases(project)
    from assft_core.session.cache import cache_usage
    from assft_core.session.workspace import PREPROCESS_CACHE, cache_limit_bytes

    print(cache_usage(project.artifact_path(*PREPROCESS_CACHE), cache_limit_bytes(project)).describe())
    from assft_core.session.evaluation import hd95_text
    from assft_core.session.round_change import format_change, round_changes

    history = rounds.list_rounds(project)
    changes = {c.round: c for c in round_changes(project)}
    tries = rounds.reopenings(project)
    print()
    for past in history:
        for earlier in tries.get(past.idx, []):
            mean = (earlier.get("earlier_metrics") or {}).get("mean_dice")
            print(f"round {past.idx}: fine-tuned again; the earlier model is kept in {earlier.get('earlier_model')}"
                  + (f" (its test mean Dice {mean:.3f})" if isinstance(mean, (int, float)) else ""))
        if past.idx in changes:
            print(f"round {past.idx}: {past.state.value}, {past.metrics.get('labelled', '?')} labelled "
                  f"(recipe {past.metrics.get('recipe') or 'paper'}); test Dice {changes[past.idx].before} → "
                  f"{changes[past.idx].after}:")
            print(format_change(changes[past.idx]))
            print(f"  {hd95_text(past.metrics.get('overall') or past.metrics)}")
        elif past is not history[-1]:
            shown = {k: v for k, v in past.metrics.items() if isinstance(v, (int, float)) and k != "mean_hd95_mm"}
            hd95 = f"  {hd95_text(past.metrics.get('overall') or past.metrics)}" if "mean_hd95_mm" in past.metrics else ""
            print(f"round {past.idx}: {past.state.value}  " + "  ".join(f"{k} {v:.3g}" for k, v in shown.items()) + hd95)
    from assft_core.session.annotation import round_efforts

    for idx, effort in round_efforts(project).items():
        print(f"round {idx}: annotation effort: {effort.cases} case(s), {effort.changed_voxels} voxel(s), "
              f"{effort.changed_slices} slice(s) changed, mean Dice {effort.mean_dice:.3f} (pre-annotation vs final)")
    info = history[-1]
    print(f"round {info.idx}: {info.state.value}  → next: {rounds.NEXT_STEP[info.state]}")
    labelled = labels.current_labels(project)
    for q in rounds.list_queries(project):
        print(f"  #{q.rank:<3} {q.case_id:<24} {q.shown_status(labelled):<9} ({q.strategy})")
    recent = jobs.list_jobs(project)[:5]
    if recent:
        print("\njobs (newest first):")
        _print_jobs(recent)
    from assft_core.session.doctor import missing_artifacts

    missing = missing_artifacts(project.folder)
    if missing:
        print(f"\n{len(missing)} missing artefact(s) (`assft doctor -p {project.folder}` for every check):")
        for finding in missing:
            print(f"  missing: {finding}")
    return 0


# Warnings printed after an import (the rest are counted).
_WARNINGS_SHOWN = 10


def _print_cases(project: Project) -> None:
    with reading(project.db) as conn:
        cases = conn.execute("SELECT case_id, site, split, usable FROM cases").fetchall()
        unusable = conn.execute("SELECT case_id, integrity FROM cases WHERE usable = 0").fetchall()
        usable_rows = conn.execute("SELECT case_id, integrity FROM cases WHERE usable = 1 ORDER BY case_id").fetchall()
    current = labels.current_labels(project)
    total: Counter[tuple[str, str]] = Counter()
    usable: Counter[tuple[str, str]] = Counter()
    labelled: Counter[tuple[str, str]] = Counter()
    for row in cases:
        key = (row["site"], row["split"])
        total[key] += 1
        usable[key] += int(row["usable"])
        labelled[key] += int(row["case_id"] in current)
    print(f"\n{'site':<16} {'split':<13} {'cases':>5} {'usable':>6} {'labelled':>8}")
    for key in sorted(total):
        print(f"{key[0]:<16} {key[1]:<13} {total[key]:>5} {usable[key]:>6} {labelled[key]:>8}")
    print(f"{'total':<16} {'':<13} {sum(total.values()):>5} {sum(usable.values()):>6} {sum(labelled.values()):>8}")
    sources = Counter(v.source for v in current.values())
    if sources:
        print("labels by source: " + ", ".join(f"{k} {n}" for k, n in sorted(sources.items())))
    for row in unusable:
        print(f"\nunusable case {row['case_id']}:")
        for problem in problems_from_json(row["integrity"]):
            print(f"  {problem}")
    warned = [(row["case_id"], p) for row in usable_rows for p in problems_from_json(row["integrity"])
              if p.severity is Severity.WARNING]
    if warned:
        print(f"\n{len(warned)} warning(s) on usable cases:")
        for case_id, problem in warned[:_WARNINGS_SHOWN]:
            print(f"  [{case_id}] {problem}")
        if len(warned) > _WARNINGS_SHOWN:
            print(f"  … and {len(warned) - _WARNINGS_SHOWN} more (`assft validate --dataset DIR` lists them all)")


def _print_jobs(rows: list[jobs.JobInfo]) -> None:
    print(f"{'id':>4} {'kind':<10} {'status':<9} {'progress':>8}  {'heartbeat':>9}  message")
    now = time.time()
    for j in rows:
        # A finished job's last heartbeat says nothing; only a live one's age tells whether it still runs.
        beat = f"{now - j.heartbeat:.0f}s ago" if j.heartbeat and j.status in jobs.ACTIVE else "-"
        print(f"{j.id:>4} {j.kind:<10} {j.status.value:<9} {j.progress:>7.0%}  {beat:>9}  {j.message}")


def _print_queries(queries: list[rounds.Query]) -> None:
    """Each pick with the numbers behind it (METHOD.md §3: score, KG and its rank, ASD and its rank,
    diversity δ, nearest labelled case), then why each was picked in plain words (the sentence the
    Query page shows)."""

    def num(key: str) -> str:
        value = q.explanation.get(key)
        return "–" if value is None else f"{value:.3f}"

    print(f"{'rank':<5} {'case':<24} {'status':<9} {'score':>6} {'KG':>6} {'k^':>6} {'ASD':>6} {'a^':>6} "
          f"{'delta':>6}  nearest labelled")
    for q in queries:
        print(f"#{q.rank:<4} {q.case_id:<24} {q.status.value:<9} {num('score'):>6} {num('kg'):>6} "
              f"{num('kg_rank'):>6} {num('asd'):>6} {num('asd_rank'):>6} {num('delta'):>6}  "
              f"{q.explanation.get('nearest_labelled_id') or '–'}")
    for q in queries:
        print(f"  why #{q.rank}: {pick_sentence(q.case_id, q.strategy, q.explanation)}")
    notes = sorted({term for q in queries for term in q.explanation.get("unavailable") or []})
    for note in notes:
        print(f"note: {note}")


def _query(args: argparse.Namespace) -> int:
    from assft_core.session.query import propose_round

    _print_queries(propose_round(project_from_args(args), args.strategy, args.budget))
    return 0


def _approve(args: argparse.Namespace) -> int:
    _print_queries(rounds.approve(project_from_args(args), None if args.all else args.cases))
    return 0


def _next_round(args: argparse.Namespace) -> int:
    info = rounds.start_next_round(project_from_args(args))
    print(f"round {info.idx} is open; next: {rounds.NEXT_STEP[info.state]}")
    return 0


def _reject(args: argparse.Namespace) -> int:
    _print_queries(rounds.reject(project_from_args(args), args.case))
    return 0


def _swap(args: argparse.Namespace) -> int:
    from assft_core.session.query import swap_pick

    _print_queries(swap_pick(project_from_args(args), args.case))
    return 0


def _label(args: argparse.Namespace) -> int:
    if not args.oracle and len(args.args) != 2:
        args.usage_error("give CASE FILE (or --oracle [CASE...] for the dataset's labels in demo mode)")
    project = project_from_args(args)
    if args.oracle:
        done = labels.label_with_oracle(project, args.args or None)
        for v in done:
            print(f"{v.case_id}: label v{v.version} (oracle)")
        if not done:
            print("nothing to label: every approved pick already has a label")
    else:
        v = labels.label_case(project, args.args[0], args.args[1])
        print(f"{v.case_id}: label v{v.version} stored ({v.sha256[:12]})")
        for problem in v.validation:
            print(f"  {problem}")
    info = rounds.current_round(project)
    print(f"round {info.idx}: {info.state.value}")
    return 0


def _job_list(args: argparse.Namespace) -> int:
    rows = jobs.list_jobs(project_from_args(args))
    if rows:
        _print_jobs(rows)
    else:
        print("no jobs")
    return 0


def _job_cancel(args: argparse.Namespace) -> int:
    status = jobs.cancel_job(project_from_args(args), args.job_id)
    print(f"job {args.job_id}: {status.value}")
    return 0


def _job_resume(args: argparse.Namespace) -> int:
    job = jobs.resume_job(project_from_args(args), args.job_id)
    print(f"job {job.id} relaunched (pid {job.pid}) from {job.resume_from or 'the start'}")
    return 0


def _job_run(args: argparse.Namespace) -> int:
    status = jobs.run_job(project_from_args(args), args.job_id)
    print(f"job {args.job_id}: {status.value}")
    return 0 if status in (jobs.JobStatus.DONE, jobs.JobStatus.CANCELLED) else 1
