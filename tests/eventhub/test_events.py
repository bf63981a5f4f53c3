"""Event → document conversion details that the emulator tests do not pin down."""

from __future__ import annotations

import datetime as dt

from fluxion_connect_eventhub.events import _enqueued, _EnqueuedTimes


def test_enqueued_times_are_remembered_only_for_the_same_value() -> None:
    times = _EnqueuedTimes()
    base = 1_700_000_000_000
    for millis in (base, base, base + 1, base, 1_700_000_000_000.5, None, "x", base):
        assert times.text(millis) == _enqueued(millis)
    assert times.text(base) == "2023-11-14T22:13:20.000+00:00"
    assert dt.datetime.fromisoformat(str(times.text(base + 1))).microsecond == 1000
