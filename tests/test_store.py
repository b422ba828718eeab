"""The watch's store: rounds, history, state changes and retention."""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from agent.report import now
from agent.store import Retention, Store, StoreError, default_state_dir
from tests.reports import make_report

NFS = "file.nfs.nfs-tcp"
SMB = "file.smb.smb-direct-tcp"


def test_rounds_are_kept_whole(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    report = make_report({NFS: "pass", SMB: "pass"})
    round_id, changes = store.save_round(report)
    assert round_id == 1
    assert changes == []
    assert store.last_report() == report
    assert store.round_count() == 1
    assert store.rounds()[0]["verdict"] == "pass"


def test_a_status_change_is_an_event_with_both_results(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.save_round(make_report({NFS: "pass", SMB: "pass"}))
    _id, changes = store.save_round(make_report({NFS: "fail", SMB: "pass"}))
    assert [(c.rule, c.previous["status"], c.current["status"]) for c in changes] == [
        (NFS, "pass", "fail")
    ]
    assert "pass -> fail (timeout)" in changes[0].summary
    _id, back = store.save_round(make_report({NFS: "pass", SMB: "pass"}))
    assert [c.current["status"] for c in back] == ["pass"]
    events = store.events()
    assert [e["current"]["status"] for e in events] == ["pass", "fail"]
    assert events[1]["previous"]["detail"] == f"{NFS} is pass"


def test_a_rule_missing_from_a_round_keeps_its_last_state(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.save_round(make_report({NFS: "fail", SMB: "pass"}))
    store.save_round(make_report({SMB: "pass"}), interrupted=True)
    _id, changes = store.save_round(make_report({NFS: "pass", SMB: "pass"}))
    assert [(c.rule, c.previous["status"]) for c in changes] == [(NFS, "fail")]
    assert store.rounds()[1]["interrupted"] is True


def test_the_last_whole_round_passes_over_an_interrupted_one(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    whole = make_report({NFS: "pass", SMB: "pass"})
    cut = make_report({SMB: "fail"})
    store.save_round(whole)
    store.save_round(cut, interrupted=True)
    assert store.last_report() == cut
    assert store.last_report(complete=True) == whole


def test_history_of_one_rule_newest_first(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    for status in ("pass", "fail", "pass"):
        store.save_round(make_report({NFS: status, SMB: "pass"}))
    history = store.history(NFS, limit=2)
    assert [(h["round"], h["status"]) for h in history] == [(3, "pass"), (2, "fail")]
    assert store.history("no.such.rule") == []


def test_retention_by_count_and_by_age(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    old = now() - timedelta(days=10)
    store.save_round(make_report({NFS: "pass"}, finished=old))
    for status in ("fail", "pass", "fail", "pass"):
        store.save_round(make_report({NFS: status}))
    assert store.prune(Retention(days=7, rounds=3)) == 2
    assert [r["round"] for r in store.rounds()] == [5, 4, 3]
    assert len(store.history(NFS)) == 3
    assert all(e["round"] >= 3 for e in store.events())


def test_reopened_store_remembers_the_state(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    first.save_round(make_report({NFS: "pass"}))
    first.close()
    again = Store.open(tmp_path)
    _id, changes = again.save_round(make_report({NFS: "fail"}))
    assert len(changes) == 1


def test_open_existing_reads_or_says_none(tmp_path: Path) -> None:
    assert Store.open_existing(tmp_path) is None
    Store.open(tmp_path).save_round(make_report({NFS: "pass"}))
    reader = Store.open_existing(tmp_path)
    assert reader is not None
    assert reader.round_count() == 1
    with pytest.raises(sqlite3.OperationalError):
        reader._db.execute("DELETE FROM rounds")


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "sgw-reach.db").write_bytes(b"not sqlite" * 100)
    with pytest.raises(StoreError, match=r"sgw-reach\.db"):
        Store.open_existing(tmp_path)
    with pytest.raises(StoreError, match=r"sgw-reach\.db"):
        Store.open(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_state_dir_is_named(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    with pytest.raises(StoreError, match=str(tmp_path)):
        Store.open(tmp_path / "state")


def test_state_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot write there"):
        Store.open(blocker)


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SGW_REACH_STATE_DIR", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/sgw-reach:/other")
    assert default_state_dir() == Path("/var/lib/sgw-reach")
    monkeypatch.setenv("SGW_REACH_STATE_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path
    monkeypatch.delenv("SGW_REACH_STATE_DIR")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", "/x")
    assert default_state_dir() == Path("/x/sgw-reach")
