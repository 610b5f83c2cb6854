"""loadtests.room_tick_cost: a room of the capacity run's team ticks, its drivers' poses reach the physics, and every
part of the tick is timed."""

from __future__ import annotations

import json

from loadtests import room_tick_cost
from loadtests.team import driver_place


def test_a_short_run_drives_the_instruments_and_times_every_part(capsys):
    assert room_tick_cost.main(["--ticks", "10", "--repeats", "1", "--participants", "3", "--observers", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["instruments"] == 2  # two drivers (and a mentor), each holding the scenario's first instrument
    assert result["input_poses_per_run"] >= 2 * (10 + room_tick_cost.WARM_UP_TICKS)  # 90 Hz poses at 60 Hz ticks
    parts = [result[f"{part}_us"]["mean"] for part in room_tick_cost.PARTS]
    assert all(value > 0.0 for value in parts)
    assert result["tick_us"]["mean"] >= result["advance_us"]["mean"]


def test_drivers_circle_where_the_capacity_run_puts_them():
    assert driver_place(0, 1) == (0.0, 0.0)
    assert [driver_place(d, 3)[0] for d in range(3)] == [-0.015, 0.0, 0.015]
    assert driver_place(2, 3)[1] == 2.6
