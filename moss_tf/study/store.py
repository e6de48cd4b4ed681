"""The vote database: one SQLite file holding the study, the visits and the votes.

Nothing personal is stored: a visit is a random token, its groups (image and
the shuffled method order shown) and the method picked in each group. No IP
address, user agent, name or time. Every vote is committed at once, so votes
and visits in progress survive a restart of the server.

The study definition (methods, images, files) is stored when serving starts,
so the results need only the database file.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from moss_tf.study.scores import StudyResults, vote_counts
from moss_tf.study.study import Study, StudyError

__all__ = ["Group", "VoteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    definition TEXT NOT NULL              -- Study.to_dict() as JSON
);
CREATE TABLE IF NOT EXISTS visits (
    number INTEGER PRIMARY KEY,           -- 1, 2, ... in order of arrival
    token TEXT NOT NULL UNIQUE            -- random, the only handle of an evaluator
);
CREATE TABLE IF NOT EXISTS groups (
    token TEXT NOT NULL REFERENCES visits (token),
    position INTEGER NOT NULL,            -- 0 .. groups per visit - 1
    image TEXT NOT NULL,
    shown_order TEXT NOT NULL,            -- JSON list: the method behind label A, B, ...
    choice TEXT,                          -- the method picked; NULL until voted
    PRIMARY KEY (token, position)
);
"""


@dataclass(frozen=True)
class Group:
    """One group of a visit: an image and its results in the order shown.

    Attributes:
        position: 0-based place of the group in the visit.
        image: image stem.
        shown_order: the method behind label A, B, C, ...
        choice: the method picked, or None before the vote.
    """

    position: int
    image: str
    shown_order: tuple[str, ...]
    choice: str | None


class VoteStore:
    """Read and write one vote database.

    Args:
        path: the SQLite file.
        create: create the file when missing (default True); with False a
            missing file raises StudyError (reading results needs votes).

    A connection is opened per call, so one store serves the threads of a
    web server; SQLite serialises the writes.
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StudyError(f"vote database {self.path} does not exist")
        if not self.path.parent.is_dir():
            raise StudyError(f"vote database {self.path}: folder {self.path.parent} does not exist")
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise StudyError(f"vote database {self.path}: {error}") from error

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits when the block succeeds and is closed after it."""
        with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            yield db

    def save_study(self, study: Study) -> None:
        """Store the study, or check that the stored one has the same methods and images.

        File paths and the method order are updated (folders may have moved);
        other methods or images raise StudyError, so votes of two different
        studies never mix in one file.
        """
        stored = self.load_study(required=False)
        if stored is not None and (
            set(stored.methods) != set(study.methods) or stored.images != study.images
        ):
            raise StudyError(
                f"vote database {self.path} belongs to another study "
                f"(methods {', '.join(stored.methods)}; {len(stored.images)} images) than the "
                f"one given (methods {', '.join(study.methods)}; {len(study.images)} images); "
                "use a new --db file"
            )
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO study (id, definition) VALUES (1, ?)",
                (json.dumps(study.to_dict()),),
            )

    def load_study(self, required: bool = True) -> Study | None:
        """The stored study; None (or StudyError when ``required``) before the first serve."""
        with self._connect() as db:
            row = db.execute("SELECT definition FROM study WHERE id = 1").fetchone()
        if row is None:
            if required:
                raise StudyError(f"vote database {self.path} holds no study; run `serve` first")
            return None
        return Study.from_dict(json.loads(row[0]))

    def visit_count(self) -> int:
        """Number of visits started so far (with or without votes)."""
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM visits").fetchone()[0]

    def add_visit(self, groups: Sequence[tuple[str, Sequence[str]]]) -> str:
        """Store a new visit of ``(image, shown_order)`` groups; returns its random token."""
        token = secrets.token_urlsafe(16)
        with self._connect() as db:
            db.execute("INSERT INTO visits (token) VALUES (?)", (token,))
            db.executemany(
                "INSERT INTO groups (token, position, image, shown_order) VALUES (?, ?, ?, ?)",
                [
                    (token, position, image, json.dumps(list(order)))
                    for position, (image, order) in enumerate(groups)
                ],
            )
        return token

    def groups(self, token: str) -> list[Group]:
        """The groups of a visit in order; empty for an unknown token."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT position, image, shown_order, choice FROM groups "
                "WHERE token = ? ORDER BY position",
                (token,),
            ).fetchall()
        return [
            Group(position, image, tuple(json.loads(order)), choice)
            for position, image, order, choice in rows
        ]

    def vote(self, token: str, position: int, method: str) -> None:
        """Record (or replace) the choice of a group; committed before returning."""
        with self._connect() as db:
            changed = db.execute(
                "UPDATE groups SET choice = ? WHERE token = ? AND position = ?",
                (method, token, position),
            ).rowcount
        if changed != 1:
            raise StudyError(f"no group {position} in visit {token}")

    def votes(self) -> list[tuple[str, str]]:
        """Every vote as ``(image, method)``."""
        with self._connect() as db:
            return db.execute(
                "SELECT image, choice FROM groups WHERE choice IS NOT NULL"
            ).fetchall()

    def results(self) -> StudyResults:
        """Counts and scores of all votes so far (see :mod:`moss_tf.study.scores`)."""
        study = self.load_study()
        with self._connect() as db:
            evaluators = db.execute(
                "SELECT COUNT(DISTINCT token) FROM groups WHERE choice IS NOT NULL"
            ).fetchone()[0]
        counts = vote_counts(self.votes(), study.methods, study.images)
        return StudyResults(study.methods, study.images, counts, evaluators)
