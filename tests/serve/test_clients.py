"""Real clients against real server processes: the `openai` package, LangChain, peft adapters
swapped per request, and a second server whose `openai` generator backend asks the first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serve.config import ChatConfig
from tests.conftest import CORPUS, EVAL_CASES, ROOT
from tests.procs import free_port
from tuning.adapters import MANIFEST, AdapterRegistry

pytestmark = pytest.mark.slow

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CASE_ID = "q020"  # "How long is CCTV footage kept?": one short policy document holds the answer
RAG_TOKENS = 32
TUNED_TOKENS = 16
TUNED_QUESTION = "Name three colours of the rainbow."
BASE_TOKENS = 8192  # SmolLM2's context window


@dataclass
class Server:
    """A `ragtune serve` process and its combined stdout/stderr log."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0,
                             timeout=300)  # fmt: skip

    def get(self, path: str) -> Any:
        reply = httpx.get(self.url + path, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=300)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def spawn_server(log: Path, port: int, env: dict[str, str]) -> Server:
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "serve.cli", "serve", "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, port, log)


def wait_healthy(server: Server, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"the server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"the server never answered /health:\n{server.output()}")


def stop_server(server: Server) -> str | None:
    """SIGTERM, then kill; returns what went wrong, if anything."""
    if server.proc.poll() is not None:
        return f"the server on port {server.port} died early:\n{server.output()[-4000:]}"
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=30)
        return f"the server ignored SIGTERM for 30 s:\n{server.output()[-4000:]}"
    # uvicorn re-raises the signal once it has shut down cleanly
    if server.proc.returncode not in (0, -signal.SIGTERM) or (
        "Application shutdown complete" not in server.output()
    ):
        return f"unclean exit {server.proc.returncode}:\n{server.output()[-4000:]}"
    return None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The sample corpus ingested with the real embedder, through the CLI, while this process
    converts the packaged GGUF once for every server (the two overlap: both take ~30 s)."""
    data = tmp_path_factory.mktemp("clients") / "data"
    script = Path(sys.executable).with_name("ragtune")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "serve.cli"]
    env = clean_env(RAGTUNE_DATA_DIR=str(data))
    proc = subprocess.Popen([*cmd, "ingest", str(CORPUS), "--sync"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        request.getfixturevalue("packaged_model_dir")
    finally:
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "index version 1" in out, out
    return data


@pytest.fixture(scope="module")
def servers(data_dir: Path, model_cache_dir: Path) -> Iterator[tuple[Server, Server]]:
    """Both started at once: the hf server (three slots, so concurrent requests meet at the
    generator's own lock) and a `remote` one whose `openai` generator backend asks the first."""
    common = {"RAGTUNE_DATA_DIR": str(data_dir), "RAGTUNE_MODEL_CACHE_DIR": str(model_cache_dir)}
    ports = [free_port()]
    while len(ports) < 2:
        ports += [port for port in [free_port()] if port not in ports]
    first = spawn_server(
        data_dir.parent / "server.log", ports[0],
        clean_env(**common, RAGTUNE_SERVER__GENERATION_SLOTS="3", RAGTUNE_GENERATOR__BACKEND="hf"),
    )  # fmt: skip
    remote_env = clean_env(**common, RAGTUNE_GENERATOR__BACKEND="openai",
                           RAGTUNE_GENERATOR__BASE_URL=f"{first.url}/v1")  # fmt: skip
    second = spawn_server(data_dir.parent / "remote.log", ports[1], remote_env)
    try:
        wait_healthy(first)
        wait_healthy(second)
    except BaseException:
        for started in (first, second):
            started.proc.kill()
            started.proc.wait(timeout=30)
        raise
    yield first, second
    problems = [stop_server(second), stop_server(first)]
    assert problems == [None, None], "\n".join(p for p in problems if p)


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def remote(servers: tuple[Server, Server]) -> Server:
    return servers[1]


@pytest.fixture(autouse=True)
def show_server_output(request: pytest.FixtureRequest) -> Iterator[None]:
    """On a failure, print what the servers logged during the test (shown in the report)."""
    servers = [request.getfixturevalue(n) for n in ("server", "remote")
               if n in request.fixturenames]  # fmt: skip
    offsets = [len(s.output()) for s in servers]
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        for s, offset in zip(servers, offsets, strict=True):
            print(
                f"--- server on port {s.port} ---\n{s.output()[offset:][-8000:]}", file=sys.stderr
            )


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    cases = [json.loads(line) for line in EVAL_CASES.read_text("utf-8").splitlines() if line]
    found = next(c for c in cases if c["id"] == CASE_ID)
    assert "new" in found["tags"] and found["document_ids"]
    return found


def rag_request(case: dict[str, Any]) -> dict[str, Any]:
    return {"model": "rag", "messages": [{"role": "user", "content": case["question"]}],
            "temperature": 0, "max_tokens": RAG_TOKENS}  # fmt: skip


@pytest.fixture(scope="module")
def rag_reply(server: Server, case: dict[str, Any]) -> Any:
    return server.openai().chat.completions.create(**rag_request(case))


# -- the official openai client ---------------------------------------------------------------


def test_openai_plain_answer_cites_the_reference(rag_reply: Any, case: dict[str, Any]) -> None:
    assert rag_reply.model == "rag" and rag_reply.object == "chat.completion"
    choice = rag_reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    sources = rag_reply.model_extra["sources"]
    assert [s["rank"] for s in sources] == list(range(1, len(sources) + 1))
    assert set(case["document_ids"]) & {s["document_id"] for s in sources}
    assert all(s["text"].strip() and s["index_version"] == 1 for s in sources)
    assert rag_reply.model_extra["ragtune"]["mode"] == "rag"
    usage = rag_reply.usage
    # The prompt shows each source's window of at most focus_chars characters (a token is
    # rarely more than 6 of them), while `sources` carry the whole chunks.
    shown = sum(min(len(s["text"]), ChatConfig().focus_chars) for s in sources)
    assert shown / 6 < usage.prompt_tokens < BASE_TOKENS
    assert 1 <= usage.completion_tokens <= RAG_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_stream_matches_the_plain_answer(
    server: Server, rag_reply: Any, case: dict[str, Any]
) -> None:
    chunks = list(server.openai().chat.completions.create(
        **rag_request(case), stream=True, stream_options={"include_usage": True}
    ))  # fmt: skip
    first, *rest = chunks
    assert first.choices[0].delta.role == "assistant" and not first.choices[0].delta.content
    plain_sources = [s["chunk_id"] for s in rag_reply.model_extra["sources"]]
    assert [s["chunk_id"] for s in first.model_extra["sources"]] == plain_sources
    text = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == rag_reply.choices[0].message.content
    finishes = [
        c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [rag_reply.choices[0].finish_reason]
    assert {c.id for c in chunks} == {first.id} and {c.model for c in chunks} == {"rag"}
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.prompt_tokens == rag_reply.usage.prompt_tokens
    # Both count the ids the model generated (EOS included), so they agree exactly.
    assert usage.completion_tokens == rag_reply.usage.completion_tokens


def test_openai_lists_the_models(server: Server) -> None:
    ids = {m.id for m in server.openai().models.list()}
    assert {"default", "base", "rag"} <= ids


# -- LangChain --------------------------------------------------------------------------------


def test_langchain_invoke_and_stream(server: Server, rag_reply: Any, case: dict[str, Any]) -> None:
    from langchain_core.messages import AIMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key="unused", model="rag",
                     temperature=0, max_tokens=RAG_TOKENS, max_retries=0)  # fmt: skip
    message = llm.invoke(case["question"])
    assert isinstance(message, AIMessage) and message.content.strip()
    assert message.content == rag_reply.choices[0].message.content  # same request, greedy
    assert message.response_metadata["model_name"] == "rag"
    streamed = "".join(str(chunk.content) for chunk in llm.stream(case["question"]))
    assert streamed == message.content


# -- LoRA adapters with real peft -------------------------------------------------------------

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_STD = 0.15  # random lora_B this large changes SmolLM2's greedy answer from the first words


@dataclass
class Loras:
    registry: AdapterRegistry  # the server's own registry (same data dir)
    saved: Path  # <saved>/<name>/: what peft wrote, to publish again as other versions
    answers: dict[str, str]  # model name -> greedy answer of this process's own peft model


def ask(client: openai.OpenAI, model: str, stream: bool = False) -> tuple[str, str]:
    """(text, the response's model name) for TUNED_QUESTION, greedy."""
    request: dict[str, Any] = {
        "model": model, "messages": [{"role": "user", "content": TUNED_QUESTION}],
        "temperature": 0, "max_tokens": TUNED_TOKENS,
    }  # fmt: skip
    if not stream:
        reply = client.chat.completions.create(**request)
        return reply.choices[0].message.content, reply.model
    chunks = list(client.chat.completions.create(**request, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len({c.model for c in chunks}) == 1
    return text, chunks[0].model


def publish(registry: AdapterRegistry, name: str, files: Path) -> Path:
    staged = registry.staging_dir(name)
    for item in files.iterdir():
        shutil.copy2(item, staged / item.name)
    return registry.publish(name, staged, {"base_model_id": BASE_MODEL_ID}).path


@pytest.fixture(scope="module")
def loras(
    server: Server,
    data_dir: Path,
    packaged_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Loras:
    """Adapters 'alpha' and 'beta' (random LoRA weights), published while the server runs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir)
    model = AutoModelForCausalLM.from_pretrained(packaged_model_dir).eval()
    # The prompt the server builds for a tuned (no retrieval) request without a system message.
    messages = [{"role": "system", "content": ChatConfig().system_prompt},
                {"role": "user", "content": TUNED_QUESTION}]  # fmt: skip
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )

    def greedy(m: Any) -> str:
        with torch.inference_mode():
            out = m.generate(**inputs, max_new_tokens=TUNED_TOKENS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)  # fmt: skip
        new = out[0, inputs["input_ids"].shape[1] :]
        return str(tokenizer.decode(new, skip_special_tokens=True)).strip()

    answers = {"base": greedy(model)}
    torch.manual_seed(0)  # lora_A
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    registry = AdapterRegistry(data_dir / "adapters")
    saved = tmp_path_factory.mktemp("loras")
    for seed, name in enumerate(("alpha", "beta"), start=1):
        weights = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for key, param in peft_model.named_parameters():
                if "lora_B" in key:
                    param.copy_(torch.randn(param.shape, generator=weights) * LORA_STD)
        answers[f"tuned:{name}"] = greedy(peft_model)
        peft_model.save_pretrained(saved / name, safe_serialization=True)
        publish(registry, name, saved / name)
    return Loras(registry, saved, answers)


@pytest.fixture(scope="module")
def alone(server: Server, loras: Loras) -> dict[str, tuple[str, str]]:
    """Each model's answer, and the model name it reports, asked one request at a time."""
    client = server.openai()
    return {model: ask(client, model) for model in ("base", "tuned:alpha", "tuned:beta")}


def test_models_list_the_published_adapters(server: Server, loras: Loras) -> None:
    rows = {m["id"]: m["ragtune"] for m in server.get("/v1/models")["data"]}
    for name in ("alpha", "beta"):
        for mode in ("tuned", "rag+tuned"):
            assert rows[f"{mode}:{name}"] == {"mode": mode, "adapter": name}
            assert rows[f"{mode}:{name}@v1"] == {"mode": mode, "adapter": f"{name}@v1"}


def test_adapters_change_the_answer_as_peft_does(
    server: Server, loras: Loras, alone: dict[str, tuple[str, str]]
) -> None:
    texts = {model: text for model, (text, _) in alone.items()}
    assert len(set(texts.values())) == 3 and all(texts.values()), texts
    assert texts == loras.answers  # the server applied exactly these weights, per request
    names = {model: name for model, (_, name) in alone.items()}
    assert names == {"base": "base", "tuned:alpha": "tuned:alpha@v1", "tuned:beta": "tuned:beta@v1"}
    health = server.get("/health")
    assert sorted(health["generator"]["loaded_adapters"]) == ["alpha@v1", "beta@v1"]
    assert health["adapters"] >= 2


def test_concurrent_requests_keep_their_own_adapter(
    server: Server, alone: dict[str, tuple[str, str]]
) -> None:
    plan = [("tuned:alpha", True), ("tuned:beta", False), ("base", True),
            ("tuned:alpha", False), ("tuned:beta", True), ("base", False)]  # fmt: skip
    client = server.openai()
    together = threading.Barrier(len(plan))

    def one(item: tuple[str, bool]) -> tuple[str, str]:
        together.wait(timeout=60)
        return ask(client, *item)

    with ThreadPoolExecutor(len(plan)) as pool:
        results = list(pool.map(one, plan, timeout=600))
    assert results == [alone[model] for model, _ in plan]


def test_promote_switches_the_version_without_restart(
    server: Server, loras: Loras, alone: dict[str, tuple[str, str]]
) -> None:
    client = server.openai()
    pinned = server.post("/v1/adapters/alpha/promote", {"version": "1"})
    assert pinned.status_code == 200 and pinned.json()["ref"] == "alpha@v1", pinned.text
    publish(loras.registry, "alpha", loras.saved / "beta")  # v2: beta's weights
    assert ask(client, "tuned:alpha") == alone["tuned:alpha"]  # prod still names v1
    promoted = server.post("/v1/adapters/alpha/promote", {"version": "v2"})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["version"] == 2 and promoted.json()["aliases"] == ["prod"]
    assert ask(client, "tuned:alpha") == (alone["tuned:beta"][0], "tuned:alpha@v2")
    ids = {m["id"] for m in server.get("/v1/models")["data"]}
    assert {"tuned:alpha@prod", "tuned:alpha@v2", "rag+tuned:alpha@v2"} <= ids


def refusal(client: openai.OpenAI, model: str, code: str) -> openai.APIStatusError:
    """Plain and streamed requests fail alike, with a status, before any event is sent (the
    adapter is verified while the prompt is prepared)."""
    with pytest.raises(openai.APIStatusError) as streamed:
        ask(client, model, stream=True)
    assert streamed.value.code == code, streamed.value
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, model)
    assert caught.value.code == code, caught.value.body
    assert streamed.value.status_code == caught.value.status_code
    return caught.value


def test_adapter_for_another_base_model_is_refused(server: Server, loras: Loras) -> None:
    path = publish(loras.registry, "gamma", loras.saved / "alpha")
    manifest = json.loads((path / MANIFEST).read_text("utf-8"))
    manifest["base_model_id"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
    (path / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    err = refusal(server.openai(), "tuned:gamma", "adapter_base_mismatch")
    assert err.status_code == 409
    assert "SmolLM2-360M-Instruct" in err.message


def test_adapter_with_pickled_weights_is_refused(server: Server, loras: Loras) -> None:
    path = publish(loras.registry, "delta", loras.saved / "alpha")
    (path / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle: never to be loaded
    err = refusal(server.openai(), "tuned:delta", "adapter_refused")
    assert err.status_code == 422
    assert "adapter_model.bin" in err.message


# -- the `openai` generator backend: a second server that generates through the first ---------


def answered(server: Server, adapter: str) -> float:
    """ragtune_chat_requests_total{mode="tuned", adapter=..., status="ok"} on `server`."""
    wanted = {'mode="tuned"', f'adapter="{adapter}"', 'status="ok"'}
    for line in httpx.get(f"{server.url}/metrics", timeout=60).text.splitlines():
        name, _, rest = line.partition("{")
        if name == "ragtune_chat_requests_total" and wanted <= set(rest.split("}")[0].split(",")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_openai_backend_generates_through_the_first_server(
    server: Server,
    remote: Server,
    rag_reply: Any,
    case: dict[str, Any],
    alone: dict[str, tuple[str, str]],
) -> None:
    assert remote.get("/health")["generator"]["backend"] == "openai"
    client = remote.openai()
    reply = client.chat.completions.create(**rag_request(case))
    assert reply.model == "rag"
    assert reply.choices[0].message.content == rag_reply.choices[0].message.content
    chunk_ids = [s["chunk_id"] for s in rag_reply.model_extra["sources"]]
    assert [s["chunk_id"] for s in reply.model_extra["sources"]] == chunk_ids
    assert reply.usage.prompt_tokens == rag_reply.usage.prompt_tokens
    before = answered(server, "beta@v1")
    assert ask(client, "tuned:beta") == alone["tuned:beta"]
    assert ask(client, "tuned:beta", stream=True) == alone["tuned:beta"]
    assert answered(server, "beta@v1") == before + 2  # the first server answered, with beta
