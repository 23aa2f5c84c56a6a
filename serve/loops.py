"""A repetition guard: stop a generation that has started to loop.

Small models fall into loops ("18 mm wide, 18 mm wide, 18 mm wide, ..." until the token limit):
the answer grows wrong and slow. The guard watches the streamed text and ends the generation
(through the generator's stop event) as soon as its last `words` words already appeared, in
order, earlier in the answer. Streaming and non-streaming answers stop at the same point.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

_WORD = re.compile(r"\w+")


def loops(text: str, words: int) -> bool:
    """Whether the last `words` words of `text` occur earlier in it as a run."""
    found = [w.lower() for w in _WORD.findall(text)]
    if words <= 0 or len(found) < 2 * words:
        return False
    tail = found[-words:]
    return any(found[i : i + words] == tail for i in range(len(found) - words))


def loops_after(text: str, piece: str, words: int) -> bool:
    """Whether `text`, just grown by `piece`, now loops (`loops`); judged only when the piece
    ends a word, so the cost stays small next to a decoding step."""
    return bool(words and piece and not piece[-1].isalnum() and loops(text, words))


def guarded(pieces: Iterator[str], stop: threading.Event, words: int) -> Iterator[str]:
    """`pieces`, until the text they make loops (`loops_after`); then `stop` is set and nothing
    more comes."""
    text = ""
    for piece in pieces:
        yield piece
        text += piece
        if loops_after(text, piece, words):
            stop.set()
            for _ in pieces:  # the generator ends at its next token and fills its stats
                pass
            return
