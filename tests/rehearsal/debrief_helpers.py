"""A short real session with a cut, run through a Room directly, recorded and saved to a results store."""

from pathlib import Path

from rehearsal.bots import SurgeonScript
from rehearsal.identity import Identity
from rehearsal.recording import Recorder
from rehearsal.results_store import RESULTS_FILE, ResultsStore
from rehearsal.roles import Role
from rehearsal.room import Room
from rehearsal.scenario import load_scenario


def cut_session(data_dir: Path, session: str = "s-cut", seconds: float = 2.6, assistant: bool = False) -> Room:
    """The lead surgeon (tracked at ~80 Hz at uneven times) snips the block with scissors the nurse handed
    over; the mentor annotates and injects a complication; with ``assistant``, an assistant surgeon grasps
    and lifts the block's edge too. Saved to ``data_dir``'s results store."""
    scenario = load_scenario("basic_skills")
    room = Room(session, scenario)
    room.recorder = Recorder(data_dir / "recordings" / f"{session}.rec", session, scenario)
    room.join(Identity(session, 1, Role.LEAD_SURGEON, "Dr. Lead"))
    room.join(Identity(session, 2, Role.SCRUB_NURSE, "Nurse"))
    room.join(Identity(session, 3, Role.MENTOR, "Mentor"))
    if assistant:
        room.join(Identity(session, 4, Role.ASSISTANT_SURGEON, "Dr. Assist"))
    helper = SurgeonScript(x=-0.012, lift=0.012, start=0.5)
    room.start()
    assert room.command(2, "hand_instrument", to=1, hand="right", kind="scissors") is None
    script = SurgeonScript(x=0.0025)
    sample_time, k = 50.0, 0
    while room.elapsed < seconds:
        for _ in range(1 + (k % 3 == 0)):  # 60 Hz ticks, ~80 Hz poses at uneven times
            sample_time += 0.0105 + 0.002 * ((k * 7) % 5) / 5
            position, jaw = script.pose(room.elapsed)
            room.instrument_input(1, "right", position, script.rotation, jaw, sample_time=sample_time)
            if assistant:
                position, jaw = helper.pose(room.elapsed)
                room.instrument_input(4, "right", position, helper.rotation, jaw, sample_time=sample_time)
        if k == 20:
            assert room.command(3, "annotate", position=[0.0, 0.02, 0.0], text="cut here") is None
        if k == 40:
            assert room.command(3, "inject_complication", complication="stiff") is None
        room.advance(1 / 60)
        k += 1
    room.command(3, "end_room")
    room.recorder.close(room.state.value)
    store = ResultsStore(data_dir / RESULTS_FILE)
    try:
        store.save(room.result(1000.0, 1000.0 + room.elapsed))
    finally:
        store.close()
    return room
