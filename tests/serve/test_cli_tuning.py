"""`ragtune tune` and `ragtune adapters ...` as a user runs them: real processes, the packaged
model, the shipped brand-voice data; tiny settings so each training takes seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tuning.adapters import AdapterRegistry

pytestmark = pytest.mark.slow

SHIPPED = "data/tone/brand_voice.jsonl"
# 372 examples: hold out 1% (4) for validation, so each validation is a few forward passes.
TINY_ENV = {"RAGTUNE_TRAINING__VAL_FRACTION": "0.01"}
TINY_FLAGS = ("--max-steps", "2", "--max-length", "64", "--batch-size", "2", "--rank", "2")


def ragtune(
    data_dir: Path, cache_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "RAGTUNE_DATA_DIR": str(data_dir),
        "RAGTUNE_MODEL_CACHE_DIR": str(cache_dir),
        **TINY_ENV,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def only_json(proc: subprocess.CompletedProcess[str]) -> dict | list:
    """stdout must be exactly one JSON value on one line."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "ragtune: error: " in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def tuned(
    tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path, packaged_model_dir: Path
) -> tuple[Path, dict]:
    """brand@v1 trained once by `ragtune tune --json` into a fresh data dir."""
    data_dir = tmp_path_factory.mktemp("cli-tune") / "data"
    proc = ragtune(
        data_dir, model_cache_dir, "tune", "--data", SHIPPED, "--name", "brand", *TINY_FLAGS,
        "--json",
    )  # fmt: skip
    return data_dir, only_json(proc)  # type: ignore[return-value]


def test_tune_prints_one_json_object(tuned: tuple[Path, dict]) -> None:
    data_dir, out = tuned
    assert out["ref"] == "brand@v1" and out["version"] == 1 and out["aliases"] == []
    assert out["base_model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    result = out["result"]
    assert result["steps"] == 2 and result["initial_val_loss"] > 0
    assert result["best_val_loss"] <= result["initial_val_loss"]
    assert [s for s, _ in result["train_curve"]] == [1, 2]
    assert [s for s, _ in result["val_curve"]] == [0, 2]
    assert (data_dir / "adapters" / "brand" / "v1" / "adapter_model.safetensors").is_file()
    assert not (data_dir / "training" / "brand").exists()  # finished: checkpoints removed


def test_adapters_list_json(tuned: tuple[Path, dict], model_cache_dir: Path) -> None:
    data_dir, out = tuned
    rows = only_json(ragtune(data_dir, model_cache_dir, "adapters", "list", "--json"))
    assert isinstance(rows, list)
    (row,) = [r for r in rows if r["ref"] == "brand@v1"]
    for key in ("name", "version", "aliases", "base_model_id", "dataset_hash", "metrics"):
        assert key in row, key
    assert (row["name"], row["version"], row["aliases"]) == ("brand", 1, [])
    assert row["dataset_hash"] == out["dataset_hash"] and len(row["dataset_hash"]) == 64
    assert row["metrics"]["best_val_loss"] == out["result"]["best_val_loss"]
    assert row["created_at"] == out["created_at"] is not None
    assert (
        only_json(ragtune(data_dir, model_cache_dir, "adapters", "list", "other", "--json")) == []
    )


def test_promote_rollback_show_and_delete(tuned: tuple[Path, dict], model_cache_dir: Path) -> None:
    data_dir, _ = tuned

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return ragtune(data_dir, model_cache_dir, *args)

    second = only_json(cli("tune", "--data", SHIPPED, "--name", "brand", *TINY_FLAGS,
                           "--promote", "prod", "--json"))  # fmt: skip
    assert isinstance(second, dict)
    assert second["ref"] == "brand@v2" and second["aliases"] == ["prod"]
    # prod has only ever been v2: nothing to roll back to
    refused(cli("adapters", "rollback", "brand"), "no earlier version to roll back to")
    for ref in ("brand@v1", "brand@v2"):
        proc = cli("adapters", "promote", ref)
        assert proc.returncode == 0, proc.stderr
    assert "brand@prod -> v2" in proc.stdout
    proc = cli("adapters", "rollback", "brand")
    assert proc.returncode == 0, proc.stderr
    assert "brand@prod -> v1" in proc.stdout

    shown = only_json(cli("adapters", "show", "brand@prod", "--json"))
    assert isinstance(shown, dict)
    assert (shown["ref"], shown["aliases"]) == ("brand@v1", ["prod"])
    assert shown["manifest"]["version"] == 1 and shown["manifest"]["metrics"]["steps"] == 2

    refused(cli("adapters", "delete", "brand@v1"), "brand@v1 is prod")
    refused(cli("adapters", "delete", "brand@prod"), "not an alias")
    proc = cli("adapters", "delete", "brand@v2")
    assert proc.returncode == 0 and "deleted brand@v2" in proc.stdout, proc.stderr
    rows = only_json(cli("adapters", "list", "--json"))
    assert [(r["ref"], r["aliases"]) for r in rows] == [("brand@v1", ["prod"])]  # type: ignore[index]
    refused(cli("adapters", "show", "brand@v2"), "no version v2")


def test_bad_inputs_are_refused_before_any_training(tmp_path: Path) -> None:
    data_dir, cache = tmp_path / "data", tmp_path / "models"  # an empty cache: nothing converted

    def tune(*args: str) -> subprocess.CompletedProcess[str]:
        return ragtune(data_dir, cache, "tune", *args, *TINY_FLAGS)

    refused(tune("--data", SHIPPED, "--name", "../x"), "bad adapter name '../x'")
    refused(tune("--data", SHIPPED, "--name", "a/b"), "no path separators")
    refused(tune("--data", str(tmp_path / "nope.jsonl"), "--name", "brand"),
            "no such training file")  # fmt: skip
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"prompt": "Hi?", "response": "Hey there, rider!"}\n{oops\n'
        '{"messages": [{"role": "user", "content": "x"}]}\n{"prompt": "only a prompt"}\n',
        "utf-8",
    )
    proc = tune("--data", str(broken), "--name", "brand")
    refused(proc, "mostly broken")
    assert "line 2: bad JSON" in proc.stderr and "line 3:" in proc.stderr
    assert "line 4: 'response' is missing" in proc.stderr
    refused(
        ragtune(data_dir, cache, "tune", "--data", SHIPPED, "--name", "brand", "--max-steps", "0"),
        "max_steps",
    )
    assert not cache.exists() and not (data_dir / "training").exists()
    assert (
        not (data_dir / "adapters").exists() or AdapterRegistry(data_dir / "adapters").all() == []
    )


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("ckpt-*") if (p / "done").is_file())


def test_a_killed_training_resumes_from_its_checkpoint(
    tmp_path: Path, model_cache_dir: Path, packaged_model_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "RAGTUNE_DATA_DIR": str(data_dir),
           "RAGTUNE_MODEL_CACHE_DIR": str(model_cache_dir),
           "RAGTUNE_TRAINING__CHECKPOINT_EVERY_STEPS": "1", **TINY_ENV}  # fmt: skip
    args = [sys.executable, "-m", "serve.cli", "tune", "--data", SHIPPED, "--name", "brand",
            "--max-steps", "6", "--eval-every", "3", "--max-length", "64", "--batch-size", "2",
            "--rank", "2", "--json"]  # fmt: skip
    work = data_dir / "training" / "brand"
    registry = AdapterRegistry(data_dir / "adapters")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not _checkpoints(work):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            assert registry.all() == []  # never a version before the run is complete
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    saved = int(_checkpoints(work)[-1].name.removeprefix("ckpt-"))
    assert 1 <= saved < 6
    assert registry.all() == [] and not list((data_dir / "adapters" / "brand").glob("v*"))

    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = only_json(again)
    assert isinstance(out, dict)
    assert "resuming training from step" in again.stderr, again.stderr
    resumed_at = int(again.stderr.split("resuming training from step ")[1].split()[0])
    assert resumed_at == saved
    assert out["ref"] == "brand@v1" and out["result"]["steps"] == 6
    # the curve holds every step, the ones before the kill restored from the checkpoint
    assert [s for s, _ in out["result"]["train_curve"]] == list(range(1, 7))
    assert [s for s, _ in out["result"]["val_curve"]] == [0, 3, 6]
    assert [a.ref for a, _ in registry.all()] == ["brand@v1"]
    assert not work.exists()
    # The killed run's staging folder is invisible to the registry; the server's start-up
    # clean-up (clean_staging) removes it, and nothing else.
    registry.clean_staging()
    folder = data_dir / "adapters" / "brand"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["v1"]
