"""Scores of a user study: vote counts, selection percentage and rank-n (docs/method.md §5, Eq. 1).

Definitions (all scores are percentages in [0, 100]):

* **Counted visits**: a visit counts only when it voted on every group it was
  shown, and only the first ``visits_per_client`` visits of one client count
  (the server refuses more; a lower cap can be applied afterwards). The
  others are left out of every score, and the results say how many.
* **Selection percentage** of method i: the share of the counted votes that
  picked method i. Every vote weighs the same.
* **Rank-n score** (Eq. 1): ``R_i^n = (1/N) Σ_j 1(i ∈ top_n(x_j))``, the share
  of images whose n most-selected methods include method i. N counts the
  images that received at least one vote (an image no evaluator was shown
  says nothing about any method).
* **top_n(x_j) and ties**: method i is in top_n(x_j) when it received at
  least one vote for image j and fewer than n methods received strictly more
  votes for image j. So methods tied at the n-th place are all in top_n
  (standard competition ranking: counts 5, 3, 3, 1 rank 1, 2, 2, 4), and a
  method nobody picked for an image is never among its most-selected methods.
  Consequently the rank-n scores of one n may add up to more than n × 100 %,
  and R_i^n grows with n up to the share of images where i got any vote.

Example::

    counts = vote_counts([("rain_01", "moss"), ("rain_01", "jorder")],
                         methods=["moss", "jorder"], images=["rain_01"])
    rank_n_percentage(counts)  # [[100., 100.], [100., 100.]]: a tie at rank 1
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moss_tf.study.study import StudyError

__all__ = [
    "StudyResults",
    "rank_n_percentage",
    "selection_percentage",
    "top_n_mask",
    "vote_counts",
]


def vote_counts(
    votes: Iterable[tuple[str, str]], methods: Sequence[str], images: Sequence[str]
) -> np.ndarray:
    """Count the votes per image and method.

    Args:
        votes: ``(image, method)`` pairs, one per vote.
        methods: all method names (column order).
        images: all image stems (row order).

    Returns:
        int64 array of shape ``(len(images), len(methods))``.

    Raises:
        StudyError: a vote names an image or method outside the study.
    """
    row = {image: j for j, image in enumerate(images)}
    column = {method: i for i, method in enumerate(methods)}
    counts = np.zeros((len(images), len(methods)), dtype=np.int64)
    for image, method in votes:
        if image not in row or method not in column:
            raise StudyError(f"a vote for image {image!r}, method {method!r} is not in the study")
        counts[row[image], column[method]] += 1
    return counts


def selection_percentage(counts: np.ndarray) -> np.ndarray:
    """Share of all votes that picked each method, in [0, 100] (NaN without votes).

    Args:
        counts: ``(images, methods)`` vote counts from :func:`vote_counts`.

    Returns:
        float64 array of shape ``(methods,)``; sums to 100 when there are votes.
    """
    per_method = counts.sum(axis=0).astype(np.float64)
    total = per_method.sum()
    if total == 0:
        return np.full(per_method.shape, np.nan)
    return 100.0 * per_method / total


def top_n_mask(counts: np.ndarray, n: int) -> np.ndarray:
    """Whether method i is in top_n(x_j) of image j, with ties as the module explains.

    Args:
        counts: ``(images, methods)`` vote counts.
        n: 1 <= n <= number of methods.

    Returns:
        bool array of shape ``(images, methods)``: at least one vote and fewer
        than n methods with strictly more votes for that image.
    """
    if not 1 <= n <= counts.shape[1]:
        raise StudyError(f"rank n must be in 1..{counts.shape[1]}, got {n}")
    # more[j, i] = how many methods got strictly more votes than method i for image j.
    more = (counts[:, None, :] > counts[:, :, None]).sum(axis=2)
    return (counts > 0) & (more < n)


def rank_n_percentage(counts: np.ndarray) -> np.ndarray:
    """Rank-n scores R_i^n of Eq. (1) for n = 1..number of methods, in [0, 100].

    Args:
        counts: ``(images, methods)`` vote counts; images without any vote are
            left out of N.

    Returns:
        float64 array of shape ``(methods, methods)``: entry ``[i, n - 1]`` is
        R_i^n in percent; all NaN when no image has a vote.
    """
    voted = counts[counts.sum(axis=1) > 0]
    num_methods = counts.shape[1]
    if len(voted) == 0:
        return np.full((num_methods, num_methods), np.nan)
    return np.stack(
        [100.0 * top_n_mask(voted, n).mean(axis=0) for n in range(1, num_methods + 1)], axis=1
    )


@dataclass(frozen=True)
class StudyResults:
    """The tallies of a study and every score derived from them.

    Attributes:
        methods: method names (order of every table, file and plot).
        images: image stems.
        counts: int64 ``(images, methods)`` vote counts.
        evaluators: number of visits counted.
        over_cap_visits: visits left out as over the cap of ``visits_per_client``.
        incomplete_visits: visits left out for a group without a vote.
        visits_per_client: the cap applied (None: not applied).
    """

    methods: tuple[str, ...]
    images: tuple[str, ...]
    counts: np.ndarray
    evaluators: int
    over_cap_visits: int = 0
    incomplete_visits: int = 0
    visits_per_client: int | None = None

    @property
    def total_votes(self) -> int:
        return int(self.counts.sum())

    @property
    def images_with_votes(self) -> int:
        """N of Eq. (1)."""
        return int((self.counts.sum(axis=1) > 0).sum())

    @property
    def selection_percentage(self) -> np.ndarray:
        return selection_percentage(self.counts)

    @property
    def rank_n_percentage(self) -> np.ndarray:
        return rank_n_percentage(self.counts)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per method: votes, selection %, rank-1 .. rank-M % (NaN -> None)."""
        selection = self.selection_percentage
        rank_n = self.rank_n_percentage
        rows = []
        for i, method in enumerate(self.methods):
            row: dict[str, Any] = {
                "method": method,
                "votes": int(self.counts[:, i].sum()),
                "selection_pct": _number(selection[i]),
            }
            for n in range(1, len(self.methods) + 1):
                row[f"rank_{n}_pct"] = _number(rank_n[i, n - 1])
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-compatible values, including the per-image counts."""
        return {
            "evaluators": self.evaluators,
            "left_out": {
                "over_cap_visits": self.over_cap_visits,
                "incomplete_visits": self.incomplete_visits,
                "visits_per_client": self.visits_per_client,
            },
            "total_votes": self.total_votes,
            "images": len(self.images),
            "images_with_votes": self.images_with_votes,
            "methods": self.rows(),
            "per_image_votes": {
                image: dict(zip(self.methods, map(int, self.counts[j]), strict=True))
                for j, image in enumerate(self.images)
            },
            "definitions": {
                "evaluators": "complete visits within the cap of visits per client",
                "selection_pct": "share of the counted votes that picked the method",
                "rank_n_pct": (
                    "Eq. (1): share of the images with votes whose n most-selected methods "
                    "include the method; methods tied at the n-th place all count, a method "
                    "without a vote for an image never does"
                ),
            },
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def write_csv(self, path: str | Path) -> None:
        """One row per method; empty cells where a score is undefined (no votes)."""
        rows = self.rows()
        with Path(path).open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def left_out_line(self) -> str:
        """How many visits the scores leave out, and why."""
        cap = "" if self.visits_per_client is None else f" of {self.visits_per_client}"
        return (
            f"left out: {self.over_cap_visits} visits over the cap{cap} per client, "
            f"{self.incomplete_visits} incomplete visits"
        )

    def format_table(self) -> str:
        """A plain-text table for the terminal, scores in percent."""
        num_methods = len(self.methods)
        header = ["method", "votes", "selected %"] + [
            f"rank-{n} %" for n in range(1, 1 + num_methods)
        ]
        lines = [
            f"evaluators: {self.evaluators}   votes: {self.total_votes}   "
            f"images with votes: N = {self.images_with_votes} of {len(self.images)}",
            self.left_out_line(),
        ]
        body = [
            [row["method"], str(row["votes"])]
            + [_percent(value) for key, value in row.items() if key.endswith("_pct")]
            for row in self.rows()
        ]
        widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]
        for line in [header, *body]:
            cells = [line[0].ljust(widths[0])] + [
                cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells))
        return "\n".join(lines)


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
