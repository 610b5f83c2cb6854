"""Placement's pure choice: alive, not draining, offers the scenario, has a free slot; least loaded wins."""

from rehearsal.fleet.placement import Candidate, can_take, choose, free_slots


def _c(process, capacity=4, rooms=0, pending=0, alive=True, draining=False, scenarios=("basic_skills",)):
    return Candidate(process, capacity, rooms, pending, alive, draining, frozenset(scenarios))


def test_the_least_loaded_process_by_share_of_capacity_wins():
    chosen = choose(
        [_c("a", capacity=4, rooms=2), _c("b", capacity=8, rooms=3), _c("c", capacity=2, rooms=1)], "basic_skills"
    )
    assert chosen.process == "b"  # 3/8 < 2/4 = 1/2


def test_pending_placements_count_as_rooms():
    assert choose([_c("a", rooms=1), _c("b", pending=2)], "basic_skills").process == "a"
    assert not can_take(_c("a", capacity=2, rooms=1, pending=1), "basic_skills")


def test_dead_draining_full_or_unsuited_processes_are_never_chosen():
    field = [
        _c("dead", alive=False),
        _c("draining", draining=True),
        _c("full", capacity=1, rooms=1),
        _c("other", scenarios=("cholecystectomy",)),
    ]
    assert choose(field, "basic_skills") is None
    assert choose(field, "cholecystectomy").process == "other"
    assert free_slots(field, "basic_skills") == 0
    assert free_slots(field, "cholecystectomy") == 4


def test_ties_break_by_rooms_then_id_and_exclusions_hold():
    assert choose([_c("b"), _c("a")], "basic_skills").process == "a"
    assert choose([_c("b"), _c("a")], "basic_skills", exclude=["a"]).process == "b"
    assert choose([_c("a", capacity=0)], "basic_skills") is None
