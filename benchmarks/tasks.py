"""Tasks: one group's perturbed cells held out, predicted from that group's control cells.

Tasks are split once into **tuning** tasks (the only ones ``tune_defaults`` scores) and
**reporting** tasks (scored once with the chosen defaults by ``holdout`` and ``cross_donor``);
the groups of each role are in :data:`benchmarks.data.DATASETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from benchmarks.data import DATASETS, Dataset

Role = Literal["tuning", "reporting"]


@dataclass(frozen=True)
class Task:
    """One held-out group of one dataset, and the role it is scored in."""

    dataset: str
    group: str
    role: Role


def check_split(datasets: dict[str, Dataset] = DATASETS) -> None:
    """Raise if a group of a dataset is both a tuning and a reporting group."""
    for dataset in datasets.values():
        both = set(dataset.tuning_groups) & set(dataset.reporting_groups)
        if both:
            raise ValueError(f"{dataset.name}: {sorted(both)} both tune and report")


def tasks(
    role: Role,
    datasets: list[str],
    groups: list[str] | None = None,
    registry: dict[str, Dataset] = DATASETS,
) -> list[Task]:
    """The tasks of ``role`` on ``datasets``, in registry order; ``groups`` picks some."""
    check_split(registry)
    owned = {name: getattr(registry[name], f"{role}_groups") for name in datasets}
    unknown = set(groups or ()) - {group for own in owned.values() for group in own}
    if unknown:
        raise SystemExit(f"{sorted(unknown)}: not {role} groups of {', '.join(datasets)}")
    return [
        Task(name, group, role)
        for name, own in owned.items()
        for group in own
        if groups is None or group in groups
    ]
