"""A tiny OTLP/HTTP trace receiver on loopback, for tests and the tracing check (no collector binary here).

Accepts `POST /v1/traces` as protobuf (the Python SDK's `http/protobuf`) or JSON (Triton 2.51 exports
OTLP/HTTP JSON with hex ids) and keeps every span as a `ReceivedSpan`. `GET /spans` and
`GET /discard/on|off` let `RemoteReceiver` run it in a process of its own.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import astuple, dataclass
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

            def do_GET(self) -> None:  # the remote control of `RemoteReceiver`
                if self.path.startswith("/discard/"):
                    receiver.discard = self.path.endswith("/on")
                    doc: object = {"discard": receiver.discard}
                else:
                    with receiver.lock:
                        doc = {"spans": [list(astuple(s)) for s in receiver.received], "errors": receiver.errors}
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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


class RemoteReceiver:
    """The same receiver in its own process (`python -m harness.otlp_receiver`), so that a throughput
    measurement's load generator does not also pay, in its own interpreter, for receiving the exports."""

    def __init__(self) -> None:
        from training.export.triton_server import free_port

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._discard = False
        self.process = subprocess.Popen([sys.executable, "-m", "harness.otlp_receiver", "--port", str(self.port)])

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(self.endpoint + path, timeout=10) as response:
            return json.loads(response.read())

    @property
    def discard(self) -> bool:
        return self._discard

    @discard.setter
    def discard(self, on: bool) -> None:
        self._discard = self._get("/discard/" + ("on" if on else "off"))["discard"]

    @property
    def errors(self) -> list[str]:
        return self._get("/spans")["errors"]

    def spans(self) -> list[ReceivedSpan]:
        return [ReceivedSpan(*row) for row in self._get("/spans")["spans"]]

    wait_for = OtlpReceiver.wait_for

    def __enter__(self) -> RemoteReceiver:
        deadline = time.monotonic() + 30
        while True:
            try:
                self._get("/spans")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError("the OTLP receiver process did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.otlp_receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    args = parser.parse_args(argv)
    with OtlpReceiver(port=args.port) as rx:
        rx.thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
