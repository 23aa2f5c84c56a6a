"""Rule-based extractive facts: sentences of a passage that state a default, version or limit."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# A value as written: a quoted string, a number (with a unit when it has one) or a name.
_UNIT = r"(?: (?:bytes|seconds|characters|bits|digits|items|levels|lines|milliseconds|entries))?"
_VALUE = (
    rf"'[^'\s]{{0,20}}'|\"[^\"\s]{{0,20}}\"|-?\d+(?:[_,]\d+)*(?:\.\d+)?{_UNIT}"
    r"|[A-Za-z_][\w.]*(?:\(\))?"
)
_SIGNATURE = re.compile(
    r"\A(?:(?:abstract|class|static)?method |class |exception |async |coroutine |awaitable )?"
    r"(?P<name>[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)(?P<call>\(.{0,160}\))?(?: → .{1,40})?\Z"
)
_TITLE = re.compile(r"\A(?P<module>[a-z_][\w.]*) — \S.{3,80}\Z")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ARGUMENT = re.compile(r"\b[Tt]he (?P<arg>[a-z_]\w*) (?:argument|parameter)\b")


@dataclass(frozen=True)
class Fact:
    """One question a passage answers; `value` is in the answer and, with `evidence`, verbatim
    in the passage; `what` completes "The sources do not say ..." when the passage is absent."""

    kind: str
    subject: str  # the API entry the fact is about, e.g. "gzip.open()"
    question: str
    answer: str  # without the citation
    what: str
    value: str
    evidence: str


Rule = Callable[[str, str, str], Fact | None]  # (subject, sentence, paragraph) -> Fact


def _new_in(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.fullmatch(r"New in version (?P<v>\d+\.\d+)\.", sentence)
    if m is None:
        return None
    version = f"version {m['v']}"
    return Fact(
        "added", subject, f"In which Python version was {subject} added?",
        f"{subject} was added in Python {version}.", f"in which version {subject} was added",
        version, m.group(0)[:-1],
    )  # fmt: skip


def _changed(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.fullmatch(
        r"Changed in version (?P<v>\d+\.\d+): Added (?P<what>[^.:;]{8,80})\.", sentence
    )
    if m is None or len(m["what"].split()) > 12:
        return None
    version, what = f"version {m['v']}", m["what"]
    return Fact(
        "changed", subject, f"In which Python version did {subject} gain {what}?",
        f"{subject} gained {what} in Python {version}.",
        f"in which version {subject} gained {what}", version, m.group(0)[:-1],
    )  # fmt: skip


def _changed_any(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.fullmatch(
        r"Changed in version (?P<v>\d+\.\d+): (?P<what>[A-Z][^:;]{10,140})\.", sentence
    )
    if m is None or re.match(r"Added |\w+ (?:parameter|argument) was added", m["what"]):
        return None
    if len(m["what"].split()) > 22:
        return None
    return Fact(
        "changed", subject, f"What changed in {subject} in Python {m['v']}?",
        f"In Python version {m['v']}, {subject} changed: {m['what']}.",
        f"what changed in {subject} in Python {m['v']}", m["what"], m.group(0)[:-1],
    )  # fmt: skip


def _parameter_added(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.fullmatch(
        r"(?P<head>(?:New|Changed) in version (?P<v>\d+\.\d+)): (?:[Tt]he |Added (?:the )?)?"
        r"(?P<arg>[a-z_]\w*) (?P<kind>parameter|argument|keyword-only argument|keyword argument)"
        r"(?: was added| is new)?\.",
        sentence,
    )
    if m is None:
        return None
    version, what = f"version {m['v']}", f"the {m['arg']} {m['kind']}"
    return Fact(
        "parameter", subject, f"In which Python version did {subject} get {what}?",
        f"{subject} got {what} in Python {version}.",
        f"in which version {subject} got {what}", version, m["head"],
    )  # fmt: skip


def _deprecated(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.match(r"Deprecated since version (?P<v>\d+\.\d+)\b", sentence)
    if m is None:
        return None
    version = f"version {m['v']}"
    return Fact(
        "deprecated", subject, f"Since which Python version has {subject} been deprecated?",
        f"{subject} has been deprecated since Python {version}.",
        f"since which version {subject} has been deprecated", version, m.group(0),
    )  # fmt: skip


def _argument(sentence: str, paragraph: str) -> str | None:
    """The argument a sentence is about: named in it, else in its paragraph's first sentence."""
    for text in (sentence, _SENTENCE.split(paragraph)[0]):
        m = _ARGUMENT.search(text)
        if m is not None:
            return m["arg"]
    return None


def _default(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.search(
        rf"\b(?:defaults to|[Tt]he default(?: value)? is) (?P<v>{_VALUE})(?=[ .,;)])", sentence
    )
    arg = _argument(sentence, paragraph)
    if m is None or arg is None or m["v"].rstrip(".") in {"a", "the", "an", "not"}:
        return None
    value = m["v"]
    return Fact(
        "default", subject, f"What does the {arg} argument of {subject} default to?",
        f"The {arg} argument of {subject} defaults to {value}.",
        f"what the {arg} argument of {subject} defaults to", value, m.group(0),
    )  # fmt: skip


def _default_noun(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.search(
        rf"\b[Tt]he default (?P<noun>[a-z][a-z ]{{2,30}}?) is (?P<v>{_VALUE})(?=[ .,;)])", sentence
    )
    if m is None or m["noun"] == "value" or m["v"] in {"a", "the", "an", "not", "to"}:
        return None
    noun, value = m["noun"], m["v"]
    return Fact(
        "default", subject, f"What is the default {noun} of {subject}?",
        f"The default {noun} of {subject} is {value}.",
        f"what the default {noun} of {subject} is", value, m.group(0),
    )  # fmt: skip


def _range(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.search(
        r"\b[Tt]he (?P<arg>[a-z_]\w*) (?:argument|parameter) (?:is|must be|should be) an integer "
        r"(?P<v>(?:from|between) -?\d+ (?:to|and) -?\d+)",
        sentence,
    )
    if m is None:
        return None
    arg, value = m["arg"], m["v"]
    return Fact(
        "range", subject, f"What values can the {arg} argument of {subject} take?",
        f"The {arg} argument of {subject} is an integer {value}.",
        f"what values the {arg} argument of {subject} can take", value, m.group(0),
    )  # fmt: skip


def _returns(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.fullmatch(r"Return (?P<v>True|False|None) if (?P<cond>[^.;:()]{8,90})\.", sentence)
    if m is None or not subject.endswith("()"):
        return None
    value, cond = m["v"], m["cond"]
    return Fact(
        "returns", subject, f"What does {subject} return if {cond}?",
        f"{subject} returns {value} if {cond}.", f"what {subject} returns if {cond}",
        value, m.group(0)[:-1],
    )  # fmt: skip


def _raises(subject: str, sentence: str, paragraph: str) -> Fact | None:
    m = re.fullmatch(
        r"Raises? (?:an? )?(?P<v>[A-Z]\w*(?:Error|Exception)) if (?P<cond>[^.;:()]{8,90})\.",
        sentence,
    )
    if m is None:
        return None
    value, cond = m["v"], m["cond"]
    return Fact(
        "raises", subject, f"Which exception does {subject} raise if {cond}?",
        f"{subject} raises {value} if {cond}.", f"which exception {subject} raises if {cond}",
        value, m.group(0)[:-1],
    )  # fmt: skip


RULES: tuple[Rule, ...] = (
    _new_in, _changed, _changed_any, _parameter_added, _deprecated,
    _default, _default_noun, _range, _returns, _raises,
)  # fmt: skip


def subject_of(paragraph: str) -> str | None:
    """The API entry a signature or page-title paragraph opens; None for prose."""
    signature = _SIGNATURE.match(paragraph)
    if signature is not None:
        return signature["name"] + ("()" if signature["call"] else "")
    title = _TITLE.match(paragraph)
    return f"the {title['module']} module" if title else None


def facts_in(text: str) -> Iterator[Fact]:
    """Every fact of a passage whose subject is named earlier in the same passage."""
    subject: str | None = None
    for paragraph in text.split("\n\n"):
        opened = subject_of(paragraph)
        if opened is not None:
            subject = opened
            yield from signature_defaults(paragraph)
            continue
        if subject is None:
            continue
        for sentence in _SENTENCE.split(paragraph):
            for rule in RULES:
                fact = rule(subject, sentence.strip(), paragraph)
                if fact is not None and fact.evidence in text and fact.value in text:
                    yield fact


_PARAMETER = re.compile(rf"(?:(?<=[(,] )|(?<=\())(?P<arg>[a-z_]\w*)=(?P<v>{_VALUE})(?=[,)])")


def signature_defaults(paragraph: str) -> Iterator[Fact]:
    """Defaults written in a signature: `gzip.open(filename, mode='rb')` -> mode is 'rb'."""
    signature = _SIGNATURE.match(paragraph)
    if signature is None or not signature["call"]:
        return
    subject = signature["name"] + "()"
    for m in _PARAMETER.finditer(paragraph):
        arg, value = m["arg"], m["v"]
        if arg.startswith("_") or value == "None":  # None says little: "not given"
            continue
        yield Fact(
            "signature", subject, f"What is the default value of the {arg} parameter of {subject}?",
            f"The {arg} parameter of {subject} defaults to {value}.",
            f"what the {arg} parameter of {subject} defaults to", value, f"{arg}={value}",
        )  # fmt: skip
