"""What a watch remembers: every round's report, and the state changes.

An SQLite file in the state directory keeps each round's whole report,
one row per result for the history of a rule, and an event each time a
rule's status changes (pass to fail and back), with both results. Old
rounds are pruned by age and by count after each save; their results go
with them, and so do events older than the oldest round kept.

A target is one rule toward one host and port (a rule toward AWS has one
target per endpoint name). The state of a target is the status of its
last result; a round that was interrupted compares only what it measured.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DATABASE = "sgw-reach.db"

# The layout of the tables below, kept in the file's user_version.
_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    verdict TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    round_id INTEGER NOT NULL REFERENCES rounds(id) ON DELETE CASCADE,
    rule TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    at TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_rule ON results (rule, round_id);
CREATE INDEX IF NOT EXISTS results_round ON results (round_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    rule TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    previous TEXT NOT NULL,
    current TEXT NOT NULL
);
"""


class StoreError(Exception):
    """The state directory or its database cannot be used."""


@dataclass(frozen=True)
class Retention:
    """How much history to keep: rounds younger than ``days``, at most
    ``rounds`` of them."""

    days: float = 7.0
    rounds: int = 2000


@dataclass(frozen=True)
class Change:
    """A target whose status changed between two rounds."""

    rule: str
    host: str
    port: int
    previous: dict[str, Any]
    current: dict[str, Any]

    @property
    def summary(self) -> str:
        return (
            f"{self.rule} {self.host or '-'}:{self.port}: "
            f"{self.previous['status']} -> {self.current['status']} "
            f"({self.current['reason']})"
        )


def target_of(result: dict[str, Any]) -> tuple[str, str, int]:
    return result["rule"], result["host"] or "", int(result["port"])


class Store:
    """The database of one state directory. Not shared between threads."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (creating if need be) the store in ``state_dir``."""
        path = prepare_state_dir(state_dir) / DATABASE
        try:
            connection = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot use the database: {exc}") from exc
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA journal_mode = WAL")
            # WAL with NORMAL sync: a crash may lose the last round, never
            # corrupt the file.
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            # A write now, so that a database file that cannot be written
            # is an error at the start, not a round lost later.
            connection.execute(f"PRAGMA user_version = {_VERSION}")
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(f"{path}: cannot use the database: {exc}") from exc
        return cls(connection, path)

    @classmethod
    def open_existing(cls, state_dir: Path) -> Store | None:
        """The store in ``state_dir`` for reading, or None if there is none."""
        path = state_dir / DATABASE
        if not path.is_file():
            return None
        try:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, isolation_level=None)
            tables = connection.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
            if not tables:
                # A watch that is starting has made the file, not yet its
                # tables: there is nothing to read so far.
                connection.close()
                return None
            connection.execute("SELECT 1 FROM rounds LIMIT 1")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: not a readable sgw-reach store: {exc}") from exc
        return cls(connection, path)

    def close(self) -> None:
        self._db.close()

    def _read(self, sql: str, *params: Any) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def save_round(
        self, report: dict[str, Any], interrupted: bool = False
    ) -> tuple[int, list[Change]]:
        """Keep ``report``; return its round id and the targets that changed."""
        previous = self._last_states()
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO rounds (started_at, finished_at, verdict,"
                " interrupted, report) VALUES (?, ?, ?, ?, ?)",
                (
                    report["started_at"],
                    report["finished_at"],
                    report["summary"]["verdict"],
                    int(interrupted),
                    json.dumps(report),
                ),
            )
            round_id = int(cursor.lastrowid or 0)
            self._insert_results(round_id, report)
            changes = _changes(previous, report["results"])
            self._insert_events(round_id, report["finished_at"], changes)
        return round_id, changes

    def _insert_results(self, round_id: int, report: dict[str, Any]) -> None:
        rows = [
            (
                round_id,
                *target_of(r),
                report["finished_at"],
                r["status"],
                r["reason"],
                json.dumps(r),
            )
            for r in report["results"]
        ]
        self._db.executemany(
            "INSERT INTO results (round_id, rule, host, port, at, status,"
            " reason, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _insert_events(self, round_id: int, at: str, changes: list[Change]) -> None:
        self._db.executemany(
            "INSERT INTO events (round_id, at, rule, host, port, previous,"
            " current) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    round_id,
                    at,
                    c.rule,
                    c.host,
                    c.port,
                    json.dumps(c.previous),
                    json.dumps(c.current),
                )
                for c in changes
            ],
        )

    def _last_states(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Each target's latest result, over every round kept."""
        rows = self._read(
            "SELECT r.result FROM results r JOIN ("
            " SELECT rule, host, port, MAX(round_id) AS last FROM results"
            " GROUP BY rule, host, port) m"
            " ON r.rule = m.rule AND r.host = m.host AND r.port = m.port"
            " AND r.round_id = m.last"
        )
        states: dict[tuple[str, str, int], dict[str, Any]] = {}
        for (text,) in rows:
            result = json.loads(text)
            states[target_of(result)] = result
        return states

    def prune(self, retention: Retention, moment: datetime | None = None) -> int:
        """Drop rounds beyond ``retention``; return how many went."""
        moment = moment or datetime.now(UTC)
        cutoff = _iso(moment - timedelta(days=retention.days))
        with self._transaction():
            by_age = self._db.execute(
                "DELETE FROM rounds WHERE finished_at < ?", (cutoff,)
            ).rowcount
            by_count = self._db.execute(
                "DELETE FROM rounds WHERE id NOT IN"
                " (SELECT id FROM rounds ORDER BY id DESC LIMIT ?)",
                (retention.rounds,),
            ).rowcount
            self._db.execute(
                "DELETE FROM events WHERE round_id <"
                " (SELECT COALESCE(MIN(id), 0) FROM rounds)"
            )
        return by_age + by_count

    def last_report(self, complete: bool = False) -> dict[str, Any] | None:
        """The last round's report; with ``complete``, the last round that
        a stop did not cut short."""
        rows = self._read(
            "SELECT report FROM rounds WHERE interrupted <= ? ORDER BY id DESC LIMIT 1",
            0 if complete else 1,
        )
        return dict(json.loads(rows[0][0])) if rows else None

    def last_passes(self) -> dict[tuple[str, str, int], str]:
        """When each target last passed, over the rounds kept."""
        rows = self._read(
            "SELECT rule, host, port, MAX(at) FROM results"
            " WHERE status = 'pass' GROUP BY rule, host, port"
        )
        return {(rule, host, int(port)): at for rule, host, port, at in rows}

    def round_count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM rounds")[0][0])

    def rounds(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest rounds, newest first, without their results."""
        rows = self._read(
            "SELECT id, started_at, finished_at, verdict, interrupted"
            " FROM rounds ORDER BY id DESC LIMIT ?",
            limit,
        )
        keys = ("round", "started_at", "finished_at", "verdict", "interrupted")
        return [
            {**dict(zip(keys, row, strict=True)), "interrupted": bool(row[4])}
            for row in rows
        ]

    def history(self, rule: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest results of ``rule``, newest first, with their round."""
        rows = self._read(
            "SELECT round_id, at, result FROM results WHERE rule = ?"
            " ORDER BY round_id DESC, host, port LIMIT ?",
            rule,
            limit,
        )
        return [
            {"round": round_id, "at": at, **json.loads(text)}
            for round_id, at, text in rows
        ]

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest state changes, newest first."""
        rows = self._read(
            "SELECT round_id, at, rule, host, port, previous, current"
            " FROM events ORDER BY id DESC LIMIT ?",
            limit,
        )
        return [
            {
                "round": round_id,
                "at": at,
                "rule": rule,
                "host": host or None,
                "port": port,
                "previous": json.loads(previous),
                "current": json.loads(current),
            }
            for round_id, at, rule, host, port, previous, current in rows
        ]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc


def _changes(
    previous: dict[tuple[str, str, int], dict[str, Any]],
    results: list[dict[str, Any]],
) -> list[Change]:
    changes: list[Change] = []
    for result in results:
        rule, host, port = target_of(result)
        before = previous.get((rule, host, port))
        if before is not None and before["status"] != result["status"]:
            changes.append(Change(rule, host, port, before, result))
    return changes


def prepare_state_dir(state_dir: Path) -> Path:
    """Create ``state_dir`` if need be and prove it can be written."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = state_dir / f".write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"{state_dir}: cannot write there: {exc.strerror or exc}"
        ) from exc
    return state_dir


def default_state_dir() -> Path:
    """Where a watch keeps its state when not told: SGW_REACH_STATE_DIR,
    systemd's STATE_DIRECTORY, then the XDG state home."""
    for variable in ("SGW_REACH_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(variable, "").split(":")[0]
        if value:
            return Path(value)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(base) / "sgw-reach"


def _iso(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
