"""The shipped `brand` adapter was trained on the data this repository ships, by `make tune`."""

from __future__ import annotations

import json
import re

from tests.conftest import ROOT
from tuning.recipe import load_all


def test_shipped_brand_was_trained_on_the_shipped_data_by_make_tune() -> None:
    manifest = json.loads(
        (ROOT / "data" / "adapters" / "brand" / "ragtune-adapter.json").read_text()
    )
    recipe = (ROOT / "Makefile").read_text().split("\ntune: setup", 1)[1].split("\n\n", 1)[0]
    files = [ROOT / f for f in re.findall(r"--data (\S+)", recipe)]
    assert len(files) == 3, recipe
    data = load_all(files)
    assert manifest["dataset"]["sha256"] == data.sha256
    assert manifest["dataset"]["examples"] == len(data.examples)
    steps = int(re.search(r"--max-steps (\d+)", recipe).group(1))  # type: ignore[union-attr]
    assert manifest["metrics"]["steps"] == steps
    assert manifest["name"] == "brand"
