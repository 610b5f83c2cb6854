"""Rooms, roles, scenarios, the tick loop and the `rehearsal` command (see DESIGN.md)."""
