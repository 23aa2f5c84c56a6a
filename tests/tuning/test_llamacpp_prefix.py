"""The prefix-reuse rule's arithmetic (the real model's side: tests/tuning/test_llamacpp.py)."""

from __future__ import annotations

import itertools

import pytest

from tuning.llamacpp_prefix import TILE, parts, reusable


def test_a_short_prompt_is_evaluated_whole() -> None:
    prompt = list(range(TILE - 1))
    assert reusable([*prompt, 99], prompt) == 0


def test_the_common_start_is_kept_up_to_tile_tokens_before_the_end() -> None:
    cached = list(range(300))
    assert reusable(cached, [*range(200), -1, -2]) == 200 + 2 - TILE
    assert reusable(cached, [*range(100), *range(-1, -201, -1)]) == 100
    assert reusable(cached, cached) == 300 - TILE  # the same prompt again
    assert reusable([], cached) == 0
    assert reusable([-5, *cached], cached) == 0


@pytest.mark.parametrize("n", [1, TILE - 1, TILE, 200, 512, 513, 576, 1100, 4000])
def test_batches_cover_the_prompt_in_order_and_none_is_needlessly_short(n: int) -> None:
    batches = parts(n, 512)
    assert batches[0][0] == 0 and batches[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(batches))
    assert all(0 < end - start <= 512 for start, end in batches)
    if n >= TILE:
        assert all(end - start >= TILE for start, end in batches)
    assert len(batches) == -(-n // 512)


def test_nothing_to_evaluate_is_one_empty_batch() -> None:
    assert parts(0, 512) == [(0, 0)]
