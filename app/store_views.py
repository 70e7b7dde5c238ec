"""Engine records arranged for display: the project's cases as one table, integrity findings.

Reads only through the session engine (`list_cases`, `current_labels`); nothing here writes.
"""

from __future__ import annotations

import pandas as pd

from assft_core.data.records import Problem, Severity
from assft_core.session import labels
from assft_core.session.project import Project, list_cases

CASE_COLUMNS = ["case_id", "site", "split", "usable", "labelled", "label_source", "label_version"]


def case_frame(project: Project) -> pd.DataFrame:
    """One row per imported case (usable or not) with its site, split and current label.

    Returns:
        Columns `CASE_COLUMNS`: case_id, site, split ("pool" / "test" / ...), usable (bool),
        labelled (bool: the case has a stored label), label_source ("expert" / "oracle" / ""),
        label_version (0 when unlabelled). Sorted by case id.
    """
    current = labels.current_labels(project)
    rows = []
    for case in list_cases(project, usable_only=False):
        version = current.get(case.case_id)
        rows.append(
            {
                "case_id": case.case_id,
                "site": case.site,
                "split": case.split.value,
                "usable": case.usable,
                "labelled": version is not None,
                "label_source": version.source if version else "",
                "label_version": version.version if version else 0,
            }
        )
    return pd.DataFrame(rows, columns=CASE_COLUMNS)


def integrity_findings(project: Project) -> list[tuple[str, bool, Problem]]:
    """Every stored integrity problem as (case id, case usable, problem), errors first."""
    found = [(c.case_id, c.usable, p) for c in list_cases(project, usable_only=False) for p in c.problems]
    return sorted(found, key=lambda item: (item[2].severity is not Severity.ERROR, item[0]))
