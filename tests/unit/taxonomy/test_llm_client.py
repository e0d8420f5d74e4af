"""LLMClient's own logic (cache, budget, retries, validation, config) against a scripted fake backend."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

from training.taxonomy.llm import (
    BACKENDS,
    LLMBackendError,
    LLMBudgetExceeded,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMOutputError,
    OpenAIBackend,
    cache_key,
    chat_request,
    parse_json,
)

GOOD = '{"label": "mortgage", "confidence": 0.9}'


class Label(BaseModel):
    label: Literal["mortgage", "cards", "login"]
    confidence: float = Field(ge=0, le=1)


class FakeBackend:
    """Replays scripted replies in order and records every request it was sent."""

    script: ClassVar[list[str]] = []

    def __init__(self, config: LLMConfig, script: list[str] | None = None) -> None:
        self.replies = list(self.script if script is None else script)
        self.requests: list[dict[str, Any]] = []

    def identity(self) -> str:
        return "fake:v1"

    def chat(
        self,
        messages: list[dict[str, Any]],
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        *,
        seed: int | None = None,
    ) -> str:
        self.requests.append(
            {"messages": messages, "schema": json_schema, "max_tokens": max_tokens, "seed": seed}
        )
        return self.replies.pop(0)


def make_client(tmp_path: Path, replies: list[str], **config: Any) -> tuple[LLMClient, FakeBackend]:
    cfg = LLMConfig(backend="fake", cache_dir=str(tmp_path / "cache"), **config)
    backend = FakeBackend(cfg, replies)
    return LLMClient(cfg, backend=backend), backend


def test_registry_builds_the_named_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "fake", FakeBackend)
    monkeypatch.setattr(FakeBackend, "script", [GOOD])
    client = LLMClient(LLMConfig(backend="fake", cache_dir=str(tmp_path)))
    assert isinstance(client.backend, FakeBackend)
    assert client.complete_json("sys", "user", Label) == Label(label="mortgage", confidence=0.9)


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(LLMError, match=r"unknown LLM backend 'nope'.*local.*openai"):
        LLMClient(LLMConfig(backend="nope"))


def test_second_identical_call_is_a_cache_hit_even_across_clients(tmp_path: Path) -> None:
    client, backend = make_client(tmp_path, [GOOD])
    first = client.complete_json("sys", "session A", Label)
    assert (client.stats.calls, client.stats.cache_hits) == (1, 0)
    assert client.complete_json("sys", "session A", Label) == first
    assert (client.stats.calls, client.stats.cache_hits) == (1, 1)
    rerun, rerun_backend = make_client(tmp_path, [])  # an empty script: any real call would fail
    assert rerun.complete_json("sys", "session A", Label) == first
    assert rerun.stats.cache_hits == 1 and not rerun_backend.requests
    assert len(backend.requests) == 1


def test_cache_key_covers_what_changes_the_reply() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    base = cache_key("local", "m", msgs, {"type": "object"}, 0.0, 64, 7)
    assert base == cache_key("local", "m", [dict(m) for m in msgs], {"type": "object"}, 0.0, 64, 7)
    variants = [
        cache_key("openai", "m", msgs, {"type": "object"}, 0.0, 64, 7),
        cache_key("local", "m2", msgs, {"type": "object"}, 0.0, 64, 7),
        cache_key("local", "m", [{"role": "user", "content": "ho"}], {"type": "object"}, 0.0, 64, 7),
        cache_key("local", "m", msgs, None, 0.0, 64, 7),
        cache_key("local", "m", msgs, {"type": "object"}, 0.5, 64, 7),
        cache_key("local", "m", msgs, {"type": "object"}, 0.0, 65, 7),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_cache_disabled_with_none(tmp_path: Path) -> None:
    client, _ = make_client(tmp_path, [GOOD, GOOD])
    client.cache.root = None
    client.complete_json("s", "u", Label)
    client.complete_json("s", "u", Label)
    assert (client.stats.calls, client.stats.cache_hits) == (2, 0)


def test_budget_exceeded_raises_but_cached_calls_are_free(tmp_path: Path) -> None:
    client, _ = make_client(tmp_path, [GOOD, GOOD], call_budget=1)
    client.complete_json("sys", "session A", Label)
    with pytest.raises(LLMBudgetExceeded, match="budget 1"):
        client.complete_json("sys", "session B", Label)
    assert client.complete_json("sys", "session A", Label).label == "mortgage"
    assert client.stats.calls == 1


def test_zero_budget_allows_only_cache(tmp_path: Path) -> None:
    client, backend = make_client(tmp_path, [GOOD], call_budget=0)
    with pytest.raises(LLMBudgetExceeded):
        client.complete_json("sys", "u", Label)
    assert not backend.requests


def test_invalid_json_is_retried_with_the_error_fed_back(tmp_path: Path) -> None:
    client, backend = make_client(tmp_path, ["not json at all", GOOD])
    assert client.complete_json("sys", "u", Label).confidence == 0.9
    assert (client.stats.calls, client.stats.retries) == (2, 1)
    retry = backend.requests[1]
    assert retry["messages"][2] == {"role": "assistant", "content": "not json at all"}
    assert "rejected" in retry["messages"][3]["content"]
    assert retry["seed"] != backend.requests[0]["seed"]


def test_schema_violation_is_retried_with_the_field_named(tmp_path: Path) -> None:
    client, backend = make_client(tmp_path, ['{"label": "mortgage", "confidence": 7}', GOOD])
    client.complete_json("sys", "u", Label)
    assert "confidence" in backend.requests[1]["messages"][3]["content"]


def test_output_error_after_retries_keeps_the_last_raw_reply(tmp_path: Path) -> None:
    client, backend = make_client(tmp_path, ["{", '{"label": "x"}', '{"label": "pets", "confidence": 1}'])
    with pytest.raises(LLMOutputError) as info:
        client.complete_json("sys", "u", Label)
    assert info.value.raw == '{"label": "pets", "confidence": 1}'
    assert info.value.attempts == 3 and len(backend.requests) == 3
    assert client.stats.retries == 2


def test_retries_replay_from_cache_on_rerun(tmp_path: Path) -> None:
    client, _ = make_client(tmp_path, ["oops", GOOD])
    client.complete_json("sys", "u", Label)
    rerun, rerun_backend = make_client(tmp_path, [])
    assert rerun.complete_json("sys", "u", Label).label == "mortgage"
    assert (rerun.stats.calls, rerun.stats.cache_hits, rerun.stats.retries) == (0, 2, 1)
    assert not rerun_backend.requests


def test_pydantic_schema_reaches_the_backend(tmp_path: Path) -> None:
    client, backend = make_client(tmp_path, [GOOD], max_tokens=33)
    client.complete_json("sys", "u", Label)
    sent = backend.requests[0]
    assert sent["schema"]["properties"]["label"]["enum"] == ["mortgage", "cards", "login"]
    assert sent["max_tokens"] == 33
    assert sent["messages"][0] == {"role": "system", "content": "sys"}


def test_dict_schema_returns_parsed_json_and_checks_required(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"names": {"type": "array"}}, "required": ["names"]}
    client, _ = make_client(tmp_path, ['{"other": 1}', '```json\n{"names": ["a"]}\n```'])
    assert client.complete_json("s", "u", schema) == {"names": ["a"]}
    assert client.stats.retries == 1


def test_map_json_keeps_order_and_can_record_failures(tmp_path: Path) -> None:
    client, _ = make_client(tmp_path, [GOOD, "x", "x", "x", '{"label": "cards", "confidence": 0.1}'])
    out = client.map_json(
        ["a", "b", "c"], lambda s: f"session {s}", "sys", Label, on_error="none", progress=False
    )
    assert [r.label if r else None for r in out] == ["mortgage", None, "cards"]


def test_parse_json_accepts_fences() -> None:
    assert parse_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json(' {"a": 1} ') == {"a": 1}


def test_chat_request_uses_openai_json_schema_format() -> None:
    body = chat_request([{"role": "user", "content": "x"}], Label.model_json_schema(), 16, 0.0, 3)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Label"
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (16, 0.0, 3)
    assert "response_format" not in chat_request([], None, 16, 0.0, None)


# ---------------------------------------------------------------------------------------------- config


def test_from_env_reads_intent_variables() -> None:
    env = {
        "INTENT_LLM_BACKEND": "openai",
        "INTENT_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "INTENT_LLM_MODEL": "tiny",
        "INTENT_LLM_API_KEY": "sk-intent",
        "OPENAI_API_KEY": "sk-openai",
        "INTENT_LLM_CALL_BUDGET": "25",
        "INTENT_LLM_CACHE_DIR": "/tmp/llm-cache",
    }
    cfg = LLMConfig.from_env(env)
    assert (cfg.backend, cfg.base_url, cfg.model, cfg.api_key) == (
        "openai",
        "http://127.0.0.1:9/v1",
        "tiny",
        "sk-intent",
    )
    assert (cfg.call_budget, cfg.cache_dir) == (25, "/tmp/llm-cache")
    assert "sk-intent" not in repr(cfg)


def test_from_env_falls_back_to_openai_key_and_defaults() -> None:
    cfg = LLMConfig.from_env({"OPENAI_API_KEY": "sk-openai"}, max_tokens=64)
    assert (cfg.api_key, cfg.backend, cfg.temperature, cfg.max_retries) == ("sk-openai", "local", 0.0, 2)
    assert (cfg.cache_dir, cfg.call_budget, cfg.max_tokens) == (".cache/llm", None, 64)


def test_from_env_rejects_a_malformed_budget() -> None:
    with pytest.raises(ValueError, match="INTENT_LLM_CALL_BUDGET"):
        LLMConfig.from_env({"INTENT_LLM_CALL_BUDGET": "lots"})


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        LLMConfig(temperature=-1)
    with pytest.raises(ValueError):
        LLMConfig(max_retries=-1)


def test_openai_backend_requires_a_model_name() -> None:
    with pytest.raises(LLMError, match="INTENT_LLM_MODEL"):
        OpenAIBackend(LLMConfig(backend="openai"))


# --------------------------------------------------- openai transport retries, against a loopback stub


@pytest.fixture
def flaky_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback endpoint that answers 503 once, then a chat completion; records requests and headers."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, payload = (503, {"error": "busy"}) if len(seen) == 1 else (200, _completion(GOOD))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()
    server.server_close()


def _completion(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def test_openai_backend_retries_transient_http_errors(
    tmp_path: Path, flaky_endpoint: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = flaky_endpoint
    monkeypatch.setattr(OpenAIBackend, "backoff_s", 0.0)
    cfg = LLMConfig(backend="openai", base_url=url, model="m", api_key="sk-test", cache_dir=str(tmp_path))
    client = LLMClient(cfg)
    assert client.complete_json("sys", "u", Label).label == "mortgage"
    assert len(seen) == 2 and client.stats.calls == 1
    assert seen[1]["path"] == "/v1/chat/completions" and seen[1]["auth"] == "Bearer sk-test"
    assert seen[1]["body"]["model"] == "m"
    assert seen[1]["body"]["response_format"]["json_schema"]["schema"]["required"] == ["label", "confidence"]


def test_openai_backend_gives_up_with_a_backend_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OpenAIBackend, "backoff_s", 0.0)
    cfg = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=2)
    with pytest.raises(LLMBackendError, match="cannot reach"):
        OpenAIBackend(cfg).chat([{"role": "user", "content": "x"}], None, 8)
