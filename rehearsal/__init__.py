"""Rooms, roles, scenarios, the tick loop and the `rehearsal` command (see DESIGN.md)."""

from rehearsal import numba_cache

numba_cache.apply()  # before anything imports numba: direct commands share `make`'s compile cache
