"""The repetition guard: a looping answer is ended, an ordinary one is left alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from serve.loops import guarded, loops


def test_a_loop_is_seen_once_its_run_repeats() -> None:
    text = "The bolts are 18 mm wide, 18 mm wide, 18 mm wide, 18 mm wide,"
    assert loops(text, 6)
    assert not loops("The bolts are 18 mm wide, 18 mm wide,", 6)  # too short to tell
    assert not loops("A torque of 4.5 Nm [1]. The lever clamps take 4.5 Nm too [2].", 6)
    assert not loops("anything at all", 0)


def pieces(words: list[str], stop: threading.Event, produced: list[str]) -> Iterator[str]:
    for word in words:
        if stop.is_set():
            return
        produced.append(word)
        yield word


def test_the_guard_stops_the_generation_and_drains_it() -> None:
    stop = threading.Event()
    produced: list[str] = []
    loop = ["The", " answer", " is", *[" 18", " mm", " wide,"] * 50]
    out = "".join(guarded(pieces(loop, stop, produced), stop, 6))
    assert stop.is_set()
    assert len(produced) < 20  # stopped early, not at the 153rd piece
    assert out.startswith("The answer is 18 mm wide, 18 mm wide,") and out.count("18") <= 5


def test_an_answer_without_a_loop_streams_whole() -> None:
    stop = threading.Event()
    text = "Brake lever clamp bolts take 4.5 Nm with a 4 mm hex key [1]."
    words = [text[:5], *(" " + w for w in text[6:].split(" "))]
    produced: list[str] = []
    assert "".join(guarded(pieces(words, stop, produced), stop, 6)) == "".join(words)
    assert not stop.is_set()
