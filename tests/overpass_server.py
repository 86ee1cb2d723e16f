"""A real local Overpass API stand-in for offline tests (threading ``http.server`` on 127.0.0.1, port 0).

It answers ``/api/interpreter`` (POST form data or GET ``?data=``) with a fixed Overpass JSON document (by
default the elements of ``samples/tiny_town.osm``) and ``/api/status`` like the real server. ``modes`` is a
queue of behaviours for the next interpreter requests; when it is empty, ``default_mode`` applies:

``"ok"``, ``"429"``, ``"504"``, ``"500"`` (HTTP errors), ``"garbage"`` (200 with non-JSON), ``"remark"``
(200 with a runtime-error remark), ``"hang"`` (no answer until the server stops or ``hang_s`` passes).
``status_mode`` is what ``/api/status`` says: ``"free"`` (slots available) or ``"running"`` (no slot, queries
running: a client that trusts it waits forever).
"""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

_STATUS_RUNNING = (
    "Connected as: 2130706433\n"
    "Current time: 2024-01-01T00:00:00Z\n"
    "Announced endpoint: none\n"
    "Rate limit: 2\n"
    "Currently running queries (pid, space limit, time limit, start time):\n"
    "1234\t536870912\t180\t2024-01-01T00:00:00Z\n"
)
_STATUS = (
    "Connected as: 2130706433\n"
    "Current time: 2024-01-01T00:00:00Z\n"
    "Announced endpoint: none\n"
    "Rate limit: 2\n"
    "2 slots available now.\n"
    "Currently running queries (pid, space limit, time limit, start time):\n"
)


def overpass_json_from_osm(path: Path) -> dict:
    """The Overpass ``[out:json]`` document holding every element of an OSM XML file."""
    root = ET.parse(path).getroot()
    elements: list[dict] = []
    for el in root:
        tags = {t.get("k"): t.get("v") for t in el.findall("tag")}
        item: dict = {"type": el.tag, "id": int(el.get("id", "0"))}
        if el.tag == "node":
            item.update(lat=float(el.get("lat")), lon=float(el.get("lon")))
        elif el.tag == "way":
            item["nodes"] = [int(nd.get("ref")) for nd in el.findall("nd")]
        elif el.tag == "relation":
            item["members"] = [
                {"type": m.get("type"), "ref": int(m.get("ref")), "role": m.get("role", "")}
                for m in el.findall("member")
            ]
        else:
            continue
        if tags:
            item["tags"] = tags
        elements.append(item)
    return {
        "version": 0.6,
        "generator": "geodiff test server",
        "osm3s": {"timestamp_osm_base": "2024-01-01T00:00:00Z", "copyright": "test data"},
        "elements": elements,
    }


class OverpassTestServer:
    """Context manager running the stand-in server; ``url`` is the API base (without ``/interpreter``)."""

    def __init__(self, document: dict | None = None, default_mode: str = "ok", hang_s: float = 30.0) -> None:
        self.document = (
            document if document is not None else overpass_json_from_osm(SAMPLES / "tiny_town.osm")
        )
        self.default_mode = default_mode
        self.status_mode = "free"
        self.modes: list[str] = []
        self.hang_s = hang_s
        self.queries: list[str] = []  # interpreter queries received, in order
        self.status_requests = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api"

    def __enter__(self) -> OverpassTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_mode(self, query: str) -> str:
        with self._lock:
            self.queries.append(query)
            return self.modes.pop(0) if self.modes else self.default_mode

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def _interpreter(self, query: str) -> None:
                mode = server._next_mode(query)
                if mode == "hang":
                    server._stop.wait(server.hang_s)
                    return self._send(504, b"late")
                if mode in ("429", "504", "500"):
                    reason = {
                        "429": b"Too Many Requests",
                        "504": b"Gateway Timeout",
                        "500": b"Internal Error",
                    }
                    return self._send(
                        int(mode), b"<html><body>" + reason[mode] + b"</body></html>", "text/html"
                    )
                if mode == "garbage":
                    return self._send(200, b"<html>this is not JSON at all", "text/html")
                doc = dict(server.document)
                if mode == "remark":
                    doc["elements"] = doc["elements"][:3]
                    doc["remark"] = 'runtime error: Query timed out in "query" at line 1 after 2 seconds.'
                self._send(200, json.dumps(doc).encode())

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                parsed = urlparse(self.path)
                if parsed.path.endswith("/status"):
                    with server._lock:
                        server.status_requests += 1
                    text = _STATUS_RUNNING if server.status_mode == "running" else _STATUS
                    return self._send(200, text.encode(), "text/plain")
                if parsed.path.endswith("/interpreter"):
                    return self._interpreter(parse_qs(parsed.query).get("data", [""])[0])
                self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if urlparse(self.path).path.endswith("/interpreter"):
                    return self._interpreter(parse_qs(body).get("data", [""])[0])
                self._send(404, b"not found", "text/plain")

        return Handler
