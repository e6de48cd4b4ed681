"""The vote database: one SQLite file holding the study, the visits and the votes.

A visit is one participant: a random token, its groups (image and the
shuffled method order shown, and whether the group's page was served) and the
method picked in each group. To cap the visits per client the visit also
keeps a keyed hash of the client's network address (HMAC-SHA256 with a
random key held in the database; IPv6 addresses by their /64 network), never
the address itself; no user agent, name or time. This is pseudonymous, not
anonymous: whoever holds the file and a candidate address can test it.
Every vote is committed at once, so votes and visits in progress survive a
restart of the server (or a kill -9).

The study definition (methods, images, files) is stored when serving starts,
so the results need only the database file.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import sqlite3
from collections import Counter
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
    token TEXT NOT NULL UNIQUE,           -- random, the only handle of an evaluator
    client TEXT                           -- keyed hash of the address; NULL before the cap
);
CREATE TABLE IF NOT EXISTS groups (
    token TEXT NOT NULL REFERENCES visits (token),
    position INTEGER NOT NULL,            -- 0 .. groups per visit - 1
    image TEXT NOT NULL,
    shown_order TEXT NOT NULL,            -- JSON list: the method behind label A, B, ...
    choice TEXT,                          -- the method picked; NULL until voted
    shown INTEGER NOT NULL DEFAULT 0,     -- 1 once the group's page was served
    PRIMARY KEY (token, position)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,                 -- client_key, visits_per_client
    value TEXT NOT NULL
);
"""

# Columns added after the first release: (table, column, definition for old rows).
_ADDED_COLUMNS = [
    ("visits", "client", "TEXT"),
    ("groups", "shown", "INTEGER NOT NULL DEFAULT 1"),  # old pages were served unrecorded
]


@dataclass(frozen=True)
class Group:
    """One group of a visit: an image and its results in the order shown.

    Attributes:
        position: 0-based place of the group in the visit.
        image: image stem.
        shown_order: the method behind label A, B, C, ...
        choice: the method picked, or None before the vote.
        shown: whether the group's page was served (a vote needs it).
    """

    position: int
    image: str
    shown_order: tuple[str, ...]
    choice: str | None
    shown: bool = False


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
                _add_missing_columns(db)
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

    def client_id(self, address: str) -> str:
        """The keyed hash stored for a client address (IPv6: its /64 network)."""
        key = self._meta("client_key")
        if key is None:
            with self._connect() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('client_key', ?)",
                    (secrets.token_hex(32),),
                )
            key = self._meta("client_key")
        digest = hmac.new(bytes.fromhex(key), _network(address).encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def client_visits(self, client: str) -> int:
        """Number of visits started by ``client`` (a :meth:`client_id`)."""
        with self._connect() as db:
            row = db.execute("SELECT COUNT(*) FROM visits WHERE client = ?", (client,)).fetchone()
        return row[0]

    @property
    def visits_per_client(self) -> int | None:
        """The cap the server last ran with (None before any)."""
        value = self._meta("visits_per_client")
        return None if value is None else int(value)

    @visits_per_client.setter
    def visits_per_client(self, cap: int) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('visits_per_client', ?)",
                (str(cap),),
            )

    def _meta(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def add_visit(
        self,
        groups: Sequence[tuple[str, Sequence[str]]],
        client: str | None = None,
        cap: int | None = None,
    ) -> str | None:
        """Store a new visit of ``(image, shown_order)`` groups; returns its random token.

        With ``client`` and ``cap``, returns None instead when that client has
        ``cap`` visits already (checked and written in one transaction).
        """
        token = secrets.token_urlsafe(16)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            if client is not None and cap is not None:
                count = "SELECT COUNT(*) FROM visits WHERE client = ?"
                if db.execute(count, (client,)).fetchone()[0] >= cap:
                    return None
            db.execute("INSERT INTO visits (token, client) VALUES (?, ?)", (token, client))
            db.executemany(
                "INSERT INTO groups (token, position, image, shown_order, shown) "
                "VALUES (?, ?, ?, ?, 0)",
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
                "SELECT position, image, shown_order, choice, shown FROM groups "
                "WHERE token = ? ORDER BY position",
                (token,),
            ).fetchall()
        return [
            Group(position, image, tuple(json.loads(order)), choice, bool(shown))
            for position, image, order, choice, shown in rows
        ]

    def mark_shown(self, token: str, position: int) -> None:
        """Record that the page of a group was served (its vote is accepted from now on)."""
        with self._connect() as db:
            db.execute(
                "UPDATE groups SET shown = 1 WHERE token = ? AND position = ? AND shown = 0",
                (token, position),
            )

    def vote(self, token: str, position: int, method: str) -> None:
        """Record (or replace) the choice of a shown group; committed before returning.

        Raises:
            StudyError: no such group, or its page was never served.
        """
        with self._connect() as db:
            changed = db.execute(
                "UPDATE groups SET choice = ? WHERE token = ? AND position = ? AND shown = 1",
                (method, token, position),
            ).rowcount
        if changed != 1:
            raise StudyError(f"no group {position} shown in visit {token}")

    def votes(self) -> list[tuple[str, str]]:
        """Every vote as ``(image, method)``."""
        with self._connect() as db:
            return db.execute(
                "SELECT image, choice FROM groups WHERE choice IS NOT NULL"
            ).fetchall()

    def results(self, visits_per_client: int | None = None) -> StudyResults:
        """Counts and scores of the complete visits within the cap per client.

        Args:
            visits_per_client: count at most this many visits of one client,
                the first ones in order of arrival (default: the cap the server
                last ran with, else 1). Visits made before clients were
                recorded count as one client each.

        The visits left out (over the cap, or with a group not voted on) are
        counted in :attr:`StudyResults.over_cap_visits` and
        :attr:`StudyResults.incomplete_visits`.
        """
        study = self.load_study()
        cap = visits_per_client or self.visits_per_client or 1
        with self._connect() as db:
            visits = db.execute(
                "SELECT v.token, v.client, COUNT(*), COUNT(g.choice) FROM visits v "
                "JOIN groups g ON g.token = v.token GROUP BY v.number ORDER BY v.number"
            ).fetchall()
            votes = db.execute(
                "SELECT token, image, choice FROM groups WHERE choice IS NOT NULL"
            ).fetchall()
        per_client: Counter[str] = Counter()
        kept: set[str] = set()
        over_cap = incomplete = 0
        for token, client, num_groups, num_votes in visits:
            key = client or f"visit {token}"
            per_client[key] += 1
            if per_client[key] > cap:
                over_cap += 1
            elif num_votes < num_groups:
                incomplete += 1
            else:
                kept.add(token)
        counts = vote_counts(
            [(image, method) for token, image, method in votes if token in kept],
            study.methods,
            study.images,
        )
        return StudyResults(
            study.methods,
            study.images,
            counts,
            evaluators=len(kept),
            over_cap_visits=over_cap,
            incomplete_visits=incomplete,
            visits_per_client=cap,
        )


def _network(address: str) -> str:
    """The part of an address that names one client: IPv4 whole, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database written before a column existed up to the schema."""
    for table, column, definition in _ADDED_COLUMNS:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as error:  # another process added it meanwhile
                if "duplicate column" not in str(error):
                    raise
