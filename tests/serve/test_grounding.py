"""The number check: no RAG answer states a number its prompt does not hold, streamed or not."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from serve.config import ChatConfig
from serve.focus import wanted_terms
from serve.grounding import NumberCheck, checked, one_line
from serve.numbers import held, stated
from serve.pipeline import Mode, Pipeline, Route
from tests.serve.conftest import publish_adapter
from tests.serve.test_pipeline import ListRetriever, ask, hit
from tuning.adapters import Adapter, AdapterRegistry
from tuning.generator import (
    Completion,
    EchoGenerator,
    GenerationParams,
    Message,
    StreamStats,
)

WARRANTY = (
    "Frame (original owner) 10 years\n"
    "Battery 2 years or 800 full charge cycles, whichever comes first\n"
)
QUESTION = "How long is the battery warranty on the Aurora E3?"
PROMPT = [
    {"role": "system", "content": "Cite the source by number, like [1]."},
    {"role": "user", "content": f"[1] policies/warranty.pdf, page 1\n{WARRANTY}\n\n{QUESTION}"},
]
CHECK = NumberCheck.of(PROMPT, [WARRANTY])


def splits(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run(pieces: Sequence[str], check: NumberCheck = CHECK) -> tuple[list[str], bool]:
    stop = threading.Event()
    out = list(checked(iter(pieces), stop, check))
    return out, stop.is_set()


def test_numbers_held_and_stated() -> None:
    # The prompt holds numbers in codes, labels, words and the question; an answer states
    # standalone quantities only, never a code or a citation.
    assert held("Part MF-BAT-540, eleven years, 2,000 km, page 3, E07") >= {
        "540", "11", "2000", "3", "07",
    }  # fmt: skip
    assert stated("Order MF-BAT-540 for the E3 [1]. It costs 589 GBP, 1,000 km [2].") == {
        "589", "1000",
    }  # fmt: skip
    assert CHECK.allowed >= {"10", "2", "800", "1", "3"}  # "E3" from the question, "page 1"
    # A number the user gave earlier in the conversation is not made up; a citation mark is
    # no number.
    history = [{"role": "user", "content": "My bike is 4 years old."}, *PROMPT]
    assert "4" in NumberCheck.of(history, [WARRANTY]).allowed and "4" not in CHECK.allowed
    assert "7" not in NumberCheck.of([{"role": "user", "content": "see [7]"}], []).allowed


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_an_answer_whose_numbers_the_sources_hold_streams_unchanged(size: int) -> None:
    answer = "The battery warranty is 2 years or 800 full charge cycles [1]. The frame: 10 years."
    out, stopped = run(splits(answer, size))
    assert "".join(out) == answer and not stopped
    # A number goes out whole: no piece ends inside one ("8" before "00" is known).
    sent = ""
    for piece in out:
        sent += piece
        assert not (sent[-1].isdigit() and answer[len(sent) : len(sent) + 1].isdigit())


@pytest.mark.parametrize("size", [1, 4, 100])
def test_a_made_up_number_ends_the_answer_with_the_sources_words(size: int) -> None:
    answer = "The battery warranty is 10.5 years, as the policy says."
    out, stopped = run(splits(answer, size))
    quote = "Frame (original owner) 10 years; Battery 2 years or 800 full charge cycles, whichever"
    assert "".join(out) == f'The battery warranty is — the source says: "{quote} comes first" [1]'
    assert one_line(WARRANTY) == f"{quote} comes first"
    assert stopped  # the generation was told to end
    assert not any("10.5" in piece for piece in out)  # "10" is held, then refused as "10.5"


def test_where_the_made_up_number_stands_decides_the_joint() -> None:
    first = "2.5 years [1]."
    assert "".join(run([first])[0]).startswith('The source says: "Frame')
    second = "Good question. 12 years."
    assert "".join(run(splits(second, 2))[0]).startswith('Good question. The source says: "')


def test_citations_codes_and_a_decimal_in_progress_are_not_judged_early() -> None:
    # "[1" could be a citation, "2." a decimal: neither is sent or judged before it is whole.
    pieces = ["The warranty is 2 years [", "1", "]. Part E", "07 is ", "2", ".", "5"]
    out, stopped = run(pieces)
    assert out[0] == "The warranty is 2 years "  # the "[" waits for what follows
    assert "".join(out[:4]) == "The warranty is 2 years [1]. Part E07 is "  # E07 is a code
    # "2.5" is whole only when the answer ends, and the prompt does not hold it.
    assert stopped and "".join(out) == (
        f'The warranty is 2 years [1]. Part E07 is — the source says: "{one_line(WARRANTY)}" [1]'
    )


def test_the_first_number_may_not_come_from_a_row_the_question_is_not_about() -> None:
    # The README's first failure: asked about the battery, the model gave the frame's row.
    topic = set(wanted_terms(QUESTION))
    topical = NumberCheck.of(PROMPT, [WARRANTY], topic)
    assert topic >= {"battery", "warranty"} and topical.off_topic == {"10"}
    out, stopped = run(splits("The battery warranty is 10 years.", 3), topical)
    assert stopped and "".join(out) == (
        f'The battery warranty is — the source says: "{one_line(WARRANTY)}" [1]'
    )
    # Its own row first, then another row's number: a second claim, allowed as held.
    answer = "The battery warranty is 2 years [1]. The frame has 10 years."
    out, stopped = run(splits(answer, 3), topical)
    assert "".join(out) == answer and not stopped
    # A number the question itself holds is never off the topic.
    asked = [{"role": "user", "content": f"{WARRANTY}\nIs the frame covered for 10 years?"}]
    assert NumberCheck.of(asked, [WARRANTY], {"battery"}).off_topic == set()


def test_one_line_makes_a_table_or_a_wrapped_paragraph_quotable() -> None:
    table = "### 4.1 Annual leave\n\n| Service | Leave |\n|---|---|\n| Year 1 | **27 days** |"
    assert one_line(table) == "4.1 Annual leave; Service | Leave; Year 1 | 27 days"
    wrapped = (
        'If you buy a bike second-hand, the frame warranty for "second" and later owners is\n'
        "5 years from the original delivery date.\nBattery 2 years\nMotor 2 years"
    )
    assert one_line(wrapped) == (
        "If you buy a bike second-hand, the frame warranty for 'second' and later owners is 5 "
        "years from the original delivery date. Battery 2 years; Motor 2 years"
    )


class Saying(EchoGenerator):
    """Answers with fixed texts, one per call (the second continues the first), word by word;
    keeps what it was asked and counts the words it produced."""

    def __init__(self, *texts: str, continues: bool = True) -> None:
        self.texts, self.continues = list(texts), continues
        self.asked: list[list[Message]] = []
        self.produced = 0

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        adapter: Adapter | None = None,
        stop: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        self.asked.append(list(messages))
        going_on = messages[-1]["role"] == "assistant"
        text = self.texts[going_on]
        try:
            for i, word in enumerate(text.split()[: params.max_new_tokens]):
                if stop is not None and stop.is_set():
                    return
                self.produced += 1
                if stats is not None:
                    stats.completion_tokens = i + 1
                yield f" {word}" if i or going_on else word
        finally:
            if stop is not None:
                stop.set()  # as llama.cpp's stream does when it ends: the model is free

    def generate(
        self, messages: Sequence[Message], params: GenerationParams, adapter: Adapter | None = None
    ) -> Completion:
        text = "".join(self.stream(messages, params, adapter))
        return Completion(text, 0, len(text.split()), "stop")


PARAMS = GenerationParams(max_new_tokens=64)
CONFIG = ChatConfig(evidence_passages=0, absent_guard=False, loop_guard_words=0)


def answer_both_ways(p: Pipeline, route: Route) -> tuple[str, str]:
    prepared = p.prepare(ask(QUESTION), route, PARAMS)
    whole = p.generate(prepared, PARAMS).text
    return whole, "".join(p.stream(p.prepare(ask(QUESTION), route, PARAMS), PARAMS))


def test_the_server_answers_alike_streamed_or_not_and_stops_the_model(tmp_path: Path) -> None:
    said = "The battery warranty is 2 years and 5 months, after which you pay for repairs."
    then = "Give it a go! It lasts 7 years in the shade. Ride bright."
    registry = AdapterRegistry(tmp_path / "adapters")
    publish_adapter(registry, "brand")
    retriever = ListRetriever([hit(1, WARRANTY)])
    quoted = f'The battery warranty is 2 years and — the source says: "{one_line(WARRANTY)}" [1]'
    # Without an adapter the source's words end the answer: the model is not asked again.
    model = Saying(said, then)
    p = Pipeline(model, registry, retriever, CONFIG, 4)
    assert answer_both_ways(p, Route(Mode.RAG)) == (quoted, quoted)
    assert len(model.asked) == 2 and model.produced < 2 * len(said.split())  # stopped at "5"
    # With one, the model goes on after them in its voice, to its unpunctuated sign-off.
    model = Saying(said, "Give it a go! Ride bright, the crew")
    p = Pipeline(model, registry, retriever, CONFIG, 4)
    whole, streamed = answer_both_ways(p, Route.parse("rag+tuned:brand"))
    assert whole == streamed == f"{quoted} Give it a go! Ride bright, the crew"
    asked = model.asked[1]
    assert asked[:-1] == model.asked[0] and asked[-1] == {"role": "assistant", "content": quoted}
    # Its next made-up number ("7") ends the answer before that sentence.
    model = Saying(said, then)
    p = Pipeline(model, registry, retriever, CONFIG, 4)
    assert answer_both_ways(p, Route.parse("rag+tuned:brand"))[1] == f"{quoted} Give it a go!"
    assert model.produced < 2 * len(f"{said} {then}".split())  # every part ended early
    # So does a repetition of what was said: the loop guard sees the whole answer.
    looping = Saying(said, 'Ride bright. the source says: "Frame (original owner) 10 years; more')
    guarded = Pipeline(looping, registry, retriever, ChatConfig(evidence_passages=0,
                                                                absent_guard=False), 4)  # fmt: skip
    assert answer_both_ways(guarded, Route.parse("rag+tuned:brand"))[0] == f"{quoted} Ride bright."
    # A generator that cannot continue an answer ends it with the source's words.
    once = Saying(said, then, continues=False)
    both = answer_both_ways(
        Pipeline(once, registry, retriever, CONFIG, 4), Route.parse("rag+tuned:brand")
    )
    assert both == (quoted, quoted) and len(once.asked) == 2  # one call per answer
    # Off, or in a mode without sources, the answer is the model's own.
    off = CONFIG.model_copy(update={"number_check": False})
    assert answer_both_ways(
        Pipeline(Saying(said), registry, retriever, off, 4), Route(Mode.RAG)
    ) == (
        said,
        said,
    )
    base = Pipeline(Saying(said), registry, retriever, CONFIG, 4)
    assert answer_both_ways(base, Route(Mode.BASE)) == (said, said)
