"""A tiny OTLP/HTTP trace receiver on loopback, for tests and the tracing check (no collector binary here).

Accepts `POST /v1/traces` as protobuf (the Python SDK's `http/protobuf`) or JSON (Triton 2.51 exports
OTLP/HTTP JSON with hex ids) and keeps every span as a `ReceivedSpan`.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str  # "" for a root
    name: str
    service: str


def _hex(value: str | bytes, size: int) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if not value:
        return ""
    if len(value) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return base64.b64decode(value).hex()


def spans_from_json(doc: dict) -> list[ReceivedSpan]:
    out = []
    for rs in doc.get("resourceSpans", []):
        attrs = {a["key"]: next(iter(a.get("value", {}).values()), "") for a in rs.get("resource", {}).get(
            "attributes", [])}
        service = str(attrs.get("service.name", ""))
        for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", [])):
            for s in ss.get("spans", []):
                out.append(ReceivedSpan(_hex(s.get("traceId", ""), 16), _hex(s.get("spanId", ""), 8),
                                        _hex(s.get("parentSpanId", ""), 8), s.get("name", ""), service))
    return out


def spans_from_protobuf(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in request.resource_spans:
        service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            out += [ReceivedSpan(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, service)
                    for s in ss.spans]
    return out


class OtlpReceiver:
    """`with OtlpReceiver() as rx:` ... `rx.endpoint` (http://127.0.0.1:PORT), `rx.spans()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.lock = threading.Lock()
        self.received: list[ReceivedSpan] = []
        self.errors: list[str] = []
        # discard=True: answer exports without parsing them, so a throughput measurement on a small machine
        # is not charged for the receiver's own decoding (a real collector runs elsewhere)
        self.discard = False
        self.discarded_bytes = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                is_json = "json" in self.headers.get("Content-Type", "")
                if receiver.discard:  # a remote collector's cost to the sender: the POST, not the parsing
                    with receiver.lock:
                        receiver.discarded_bytes += len(body)
                    self._reply(is_json)
                    return
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                try:
                    spans = spans_from_json(json.loads(body)) if is_json else spans_from_protobuf(body)
                except Exception as exc:  # a malformed export is recorded, not fatal
                    with receiver.lock:
                        receiver.errors.append(f"{type(exc).__name__}: {exc}")
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received += spans
                self._reply(is_json)

            def _reply(self, is_json: bool) -> None:
                reply = b"{}" if is_json else ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if is_json else "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.received)

    def wait_for(self, done: Callable[[list[ReceivedSpan]], bool], timeout: float) -> list[ReceivedSpan]:
        """Poll until `done(spans)` or `timeout` seconds; the spans either way."""
        deadline = time.monotonic() + timeout
        while not done(spans := self.spans()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return spans

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
