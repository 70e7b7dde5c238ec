"""How long a round's work will take, before it starts: one estimate over every phase.

Each phase costs a number of units (cases scored, training steps, cases evaluated) times a time
per unit. The time per unit is measured: taken from this project's newest finished job that ran
the phase (a score job's wall time per case and model pass, a train job's wall time per
supervised and per SSFT step and per unlabelled case pseudo-labelled, an evaluation's time per
case, and a job's start-up: its time outside its phases). A phase not run here yet is timed like
a measured phase of the same kind of work when there is one (`PROXY`), else by a stated guess for
a CPU; each figure says which, so the page can tell measured from guessed.

The "quick demo" preset (`QUICK_DEMO`) is a short round for a first look; its expected time is
this same estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from assft_core.config import SSFTMode
from assft_core.data.records import Split
from assft_core.session import jobs, labels, rounds
from assft_core.session.evaluation import baseline_metrics
from assft_core.session.project import Project, list_cases
from assft_core.session.rounds import RoundState

# Guesses per unit (seconds) for a phase never run in this project: a demo-sized case on a CPU.
GUESS_S = {
    "scoring": 0.6,  # one model's forward pass and scores, per case
    "supervised": 0.5,  # one supervised step
    "pseudo-labels": 0.4,  # SSFT's pass over one unlabelled case
    "ssft": 0.5,  # one SSFT step
    "evaluation": 1.0,  # one test case: load, sliding window, Dice and HD95
}
# Per job, before and around its phases: a new process importing torch and MONAI, loading the
# model, preparing the cached cases (a guess for a CPU machine until a job has run here).
STARTUP_GUESS_S = 20.0
# A phase never run here, timed by a measured phase of the same kind of work: a forward pass
# over a case (the scoring pass) for SSFT's pseudo-labels and for the evaluation.
PROXY = {"pseudo-labels": "scoring", "evaluation": "scoring"}


@dataclass(frozen=True)
class Preset:
    """Training settings offered by name on the Fine-tune page.

    Attributes:
        name: in words.
        supervised_steps: S.
        ssft_steps: S_u.
        purpose: what it is for, in words.
    """

    name: str
    supervised_steps: int
    ssft_steps: int
    purpose: str


QUICK_DEMO = Preset("Quick demo", 30, 20, "a first look at the loop: the model changes little")


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase's expected time.

    Attributes:
        phase: its name ("scoring", "supervised", "pseudo-labels", "ssft", "evaluation").
        units: how many cases or steps.
        unit: "case" or "step".
        per_unit_s: seconds per unit.
        basis: "measured" (this phase, in this project), "as the scoring pass" (a measured phase
            of the same kind of work, `PROXY`), or "guess" (`GUESS_S`).
    """

    phase: str
    units: int
    unit: str
    per_unit_s: float
    basis: str = "guess"

    @property
    def measured(self) -> bool:
        """True when `per_unit_s` comes from a job of this project (this phase's or a proxy's)."""
        return self.basis != "guess"

    @property
    def seconds(self) -> float:
        """Expected wall time of the phase, s."""
        return self.units * self.per_unit_s


@dataclass(frozen=True)
class Estimate:
    """Expected time of several phases, and how much of it is measured.

    Attributes:
        phases: in the order they run (phases with no unit are left out).
        fixed_s: start-up time of the jobs, included in `total_s`.
        fixed_measured: whether `fixed_s` was measured (the newest finished job's time outside its phases).
    """

    phases: list[PhaseEstimate] = field(default_factory=list)
    fixed_s: float = 0.0
    fixed_measured: bool = False

    @property
    def total_s(self) -> float:
        """Expected wall time of every phase, s."""
        return self.fixed_s + sum(p.seconds for p in self.phases)

    @property
    def measured(self) -> bool:
        """True when every phase's time per unit and the start-up were measured in this project."""
        return self.fixed_measured and all(p.measured for p in self.phases)


def _rate(value: object, units: object) -> float | None:
    """Seconds per unit from a wall time and a unit count (None when either is missing or 0)."""
    if not isinstance(value, (int, float)) or not isinstance(units, (int, float)) or units <= 0:
        return None
    rate = float(value) / float(units)
    return rate if math.isfinite(rate) and rate > 0 else None


def measured_rates(project: Project) -> dict[str, float]:
    """Seconds per unit of each phase, from this project's newest finished job that ran it.

    Returns:
        phase -> seconds per case or step; phases never run here are absent. "startup": a job's
        seconds outside its phases (process start, imports), from the newest finished job.
    """
    rates: dict[str, float] = {}
    for job in jobs.list_jobs(project, reap=False):  # newest first: the first measurement wins
        if job.status is not jobs.JobStatus.DONE:
            continue
        m, wall = job.metrics, job.metrics.get("wall_s") or {}
        inside = wall.get("job") if job.kind == "train" else wall.get("total") if job.kind == "score" else None
        ended, began = getattr(job, "finished_at", None), getattr(job, "created_at", None)
        if "startup" not in rates and isinstance(inside, (int, float)) and ended and began:
            rates["startup"] = max(float(ended) - float(began) - float(inside), 0.0)
        if job.kind == "score" and "scoring" not in rates:
            passes = max(len(m.get("models") or {}), 1)
            rate = _rate(wall.get("total"), (int(m.get("n_pool") or 0) + int(m.get("n_test") or 0)) * passes)
            if rate is not None:
                rates["scoring"] = rate
        if job.kind == "train":
            params = job.params
            for phase, units in (("supervised", params.get("supervised_steps")), ("ssft", params.get("ssft_steps")),
                                 ("pseudo-labels", m.get("unlabelled"))):
                key = "scoring" if phase == "pseudo-labels" else phase  # the SSFT pass is "scoring" in wall_s
                rate = _rate(wall.get(key), units)
                if phase not in rates and rate is not None:
                    rates[phase] = rate
    evaluations = [r.metrics for r in reversed(rounds.list_rounds(project)) if r.state is RoundState.EVALUATED]
    baseline = baseline_metrics(project)
    for metrics in [*evaluations, *([baseline] if baseline else [])]:
        rate = _rate(metrics.get("eval_wall_s"), metrics.get("n_cases"))
        if rate is not None:
            rates["evaluation"] = rate
            break
    return rates


def _phase(rates: dict[str, float], phase: str, units: int, unit: str) -> PhaseEstimate:
    if phase in rates:
        return PhaseEstimate(phase, int(units), unit, rates[phase], "measured")
    proxy = PROXY.get(phase)
    if proxy in rates:
        return PhaseEstimate(phase, int(units), unit, rates[proxy], f"as the {proxy} pass")
    return PhaseEstimate(phase, int(units), unit, GUESS_S[phase], "guess")


def _startup(rates: dict[str, float], n_jobs: int) -> tuple[float, bool]:
    """Start-up seconds of `n_jobs` jobs, and whether measured."""
    if "startup" in rates:
        return rates["startup"] * n_jobs, True
    return STARTUP_GUESS_S * n_jobs, False


def training_estimate(project: Project, supervised_steps: int, ssft_steps: int, mode: SSFTMode | str,
                      *, evaluate: bool = True) -> Estimate:
    """Expected time of a train job: supervised steps, SSFT (pseudo-labels and steps), evaluation.

    Args:
        project: the open project.
        supervised_steps: S.
        ssft_steps: S_u (not run in mode `none`).
        mode: the SSFT mode.
        evaluate: whether the job evaluates the new model at its end.
    """
    rates = measured_rates(project)
    pool = list_cases(project, Split.POOL)
    labelled = set(labels.current_labels(project))
    unlabelled = sum(1 for c in pool if c.case_id not in labelled)
    ssft = SSFTMode(mode) is not SSFTMode.NONE and ssft_steps > 0
    phases = [_phase(rates, "supervised", supervised_steps, "step")]
    if ssft:
        phases += [_phase(rates, "pseudo-labels", unlabelled, "case"), _phase(rates, "ssft", ssft_steps, "step")]
    if evaluate:
        phases.append(_phase(rates, "evaluation", _evaluation_cases(project), "case"))
    return Estimate([p for p in phases if p.units > 0], *_startup(rates, 1))


def _evaluation_cases(project: Project) -> int:
    test = [c for c in list_cases(project, Split.TEST) if c.reference_label is not None]
    return len(test) or project.config.budget  # no test labels: the round's new labels (biased fallback)


def scoring_estimate(project: Project) -> Estimate:
    """Expected time of the current round's scoring pass (f_0, and f_t after round 0)."""
    rates = measured_rates(project)
    n = len(list_cases(project, Split.POOL)) + (len(list_cases(project, Split.TEST)) if project.config.score_test_cases else 0)
    passes = 1 if rounds.current_round(project).idx == 0 else 2
    return Estimate([p for p in [_phase(rates, "scoring", n * passes, "case")] if p.units > 0], *_startup(rates, 1))


def round_estimate(project: Project, supervised_steps: int | None = None, ssft_steps: int | None = None,
                   mode: SSFTMode | str | None = None) -> Estimate:
    """Expected time of a whole round: scoring, training (with SSFT) and evaluation.

    Steps and mode default to the project's settings.
    """
    cfg = project.config.ssft
    score = scoring_estimate(project)
    train = training_estimate(project, cfg.supervised_steps if supervised_steps is None else supervised_steps,
                              cfg.ssft_steps if ssft_steps is None else ssft_steps, mode or cfg.mode)
    return Estimate([*score.phases, *train.phases], score.fixed_s + train.fixed_s,
                    score.fixed_measured and train.fixed_measured)
