"""A step's Batch: plain tokens become token Events where delivered; ends go as they are."""

from __future__ import annotations

from batchsim.serve.events import Batch, Event, call_each


def test_batch_delivers_plain_tokens_as_events_before_the_ends():
    got: list[tuple[str, Event]] = []
    a, b = (lambda e: got.append(("a", e))), (lambda e: got.append(("b", e)))
    end = Event("token", 7, reason="length", timing={"e2e_s": 1.0})
    batch = Batch(tokens=[(a, 5)], ends=[(b, end)])
    assert len(batch) == 2
    call_each(batch)
    assert got == [("a", Event("token", 5)), ("b", end)]


def test_an_empty_batch_is_falsy():
    assert not Batch()
