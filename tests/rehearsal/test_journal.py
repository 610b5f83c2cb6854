"""The action journal: entries committed in order, read back after a restart, pruned by checkpoints, bounded."""

import stat

import numpy as np
import pytest

from rehearsal import journal as journal_module
from rehearsal.journal import ActionJournal


def test_entries_come_back_in_order_after_a_restart_and_go_with_checkpoints_and_the_session(tmp_path):
    path = tmp_path / "journal.sqlite3"
    first = ActionJournal(path)
    a = first.append("s-1", "command", {"participant": 7, "action": "annotate", "args": {"text": "here"}})
    b = first.append("s-2", "step", {"id": "retract", "status": "done", "instrument": np.int64(3)})
    c = first.append("s-1", "command", {"participant": 7, "action": "pause", "args": {}})
    assert a < b < c == first.last_seq and first.counters["written"] == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # arguments may hold annotations' text
    first.close()  # (a crash: nothing else is done)

    again = ActionJournal(path)
    assert again.last_seq == c and again.pending("s-1") == 2
    assert [(e.seq, e.kind, e.body["action"]) for e in again.entries("s-1")] == [
        (a, "command", "annotate"),
        (c, "command", "pause"),
    ]
    assert [e.body["action"] for e in again.entries("s-1", after=a)] == ["pause"]  # those a checkpoint lacks
    again.checkpointed("s-1", a)
    assert [e.seq for e in again.entries("s-1")] == [c] and again.pending("s-1") == 1
    again.forget("s-1")
    assert again.entries("s-1") == [] and again.pending("s-1") == 0
    assert [e.body for e in again.entries("s-2")] == [{"id": "retract", "status": "done", "instrument": 3}]


def test_a_session_whose_checkpoints_keep_failing_cannot_grow_the_journal_without_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "MAX_ENTRIES_PER_SESSION", 3)
    journal = ActionJournal(tmp_path / "journal.sqlite3")
    seqs = [journal.append("s-1", "step", {"n": k}) for k in range(5)]
    assert seqs[3:] == [None, None] and journal.counters["full"] == 2 == journal.counters["failed"]
    assert journal.append("s-2", "step", {"n": 0}) is not None  # the bound is per session
    journal.checkpointed("s-1", seqs[2])
    assert journal.append("s-1", "step", {"n": 5}) is not None  # a written checkpoint makes room again


def test_bad_entries_are_refused_or_counted_never_raised_into_a_command(tmp_path):
    journal = ActionJournal(tmp_path / "journal.sqlite3")
    with pytest.raises(ValueError, match="kind"):
        journal.append("s-1", "join", {})  # a programming error: only commands and steps are journaled
    assert journal.append("s-1", "command", {"args": {"text": "x" * (journal_module.MAX_ENTRY_BYTES + 1)}}) is None
    assert journal.append("s-1", "command", {"args": {"bad": object()}}) is None  # not serializable
    assert journal.counters["failed"] == 2 and journal.entries("s-1") == []
