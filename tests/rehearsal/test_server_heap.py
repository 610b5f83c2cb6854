"""The composition root takes start-up's long-lived heap out of the garbage collector's full scans."""

import gc

from rehearsal.server import freeze_long_lived_heap


def test_what_start_up_made_is_frozen_and_what_comes_later_is_still_collected():
    made_at_start_up = [object()]  # a container: tracked by the cyclic collector
    freeze_long_lived_heap()
    try:
        assert gc.get_freeze_count() > 0
        assert not any(o is made_at_start_up for o in gc.get_objects())  # out of every generation's scans
        made_later = [object()]
        assert any(o is made_later for o in gc.get_objects())
        cycle = [None]
        cycle[0] = cycle  # garbage made later is collected as before
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()  # the rest of the test process keeps its usual collector
