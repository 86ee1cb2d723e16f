"""Overpass source against a real local HTTP server (tests/overpass_server.py); never the internet."""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path

import osmnx
import pytest

from geodiff.errors import EmptyAreaError, OverpassError
from geodiff.osm import load_features
from geodiff.osm.overpass import fetch_elements
from geodiff.settings import Settings, get_settings

from overpass_server import OverpassTestServer
from town import TOWN_BBOX, TOWN_COUNTS


def counts(features) -> dict[tuple[int, str], int]:
    return dict(Counter(zip(features["class_id"].tolist(), features["kind"].tolist(), strict=True)))


@pytest.fixture
def server():
    with OverpassTestServer() as srv:
        yield srv


def make_settings(url: str, tmp_path: Path, **overrides: object) -> Settings:
    values = {
        "overpass_url": url,
        "cache_dir": tmp_path / "cache",
        "use_cache": False,
        "overpass_timeout_s": 10,
    }
    values.update(overrides)
    return get_settings(**values)


def test_features_come_back_classified(server: OverpassTestServer, tmp_path: Path) -> None:
    before = {
        name: getattr(osmnx.settings, name) for name in ("overpass_url", "requests_timeout", "use_cache")
    }
    getaddrinfo = socket.getaddrinfo
    features = load_features(TOWN_BBOX, settings=make_settings(server.url, tmp_path))
    assert counts(features) == TOWN_COUNTS
    assert features.crs.to_epsg() == 4326
    assert len(server.queries) == 1
    query = server.queries[0]
    assert "[out:json]" in query and "[timeout:10]" in query and "['building']" in query
    assert server.status_requests >= 1  # rate limiting asks /status first
    # osmnx's global settings and its socket patch are restored
    assert {name: getattr(osmnx.settings, name) for name in before} == before
    assert socket.getaddrinfo is getaddrinfo


def test_cache_is_used_on_second_call(server: OverpassTestServer, tmp_path: Path) -> None:
    settings = make_settings(server.url, tmp_path, use_cache=True, overpass_rate_limit=False)
    first = load_features(TOWN_BBOX, settings=settings)
    assert len(server.queries) == 1
    assert list((tmp_path / "cache" / "overpass").glob("*.json"))
    server.default_mode = "500"  # a second network request would now fail
    second = load_features(TOWN_BBOX, settings=settings)
    assert len(server.queries) == 1
    assert counts(first) == counts(second) == TOWN_COUNTS


def test_large_bbox_is_split_into_subqueries(server: OverpassTestServer, tmp_path: Path) -> None:
    # the town is ~300 x 300 m = 90,000 m2; 20,000 m2 sub-queries need several requests
    settings = make_settings(
        server.url, tmp_path, overpass_max_query_area_m2=20_000.0, overpass_rate_limit=False
    )
    messages: list[str] = []
    features = load_features(TOWN_BBOX, settings=settings, progress=lambda f, m: messages.append(m))
    assert len(server.queries) > 3
    assert len(set(server.queries)) == len(server.queries)  # different polygons
    # elements returned by several sub-queries are counted once
    assert counts(features) == TOWN_COUNTS
    assert any(f"/{len(server.queries)}" in m for m in messages)


def test_timeout_becomes_overpass_error(server: OverpassTestServer, tmp_path: Path) -> None:
    server.default_mode = "hang"
    settings = make_settings(server.url, tmp_path, overpass_timeout_s=1, overpass_rate_limit=False)
    start = time.monotonic()
    with pytest.raises(OverpassError) as info:
        load_features(TOWN_BBOX, settings=settings)
    assert time.monotonic() - start < 8
    message = str(info.value)
    assert "did not answer within 1 s" in message
    assert server.url + "/interpreter" in message
    assert "GEODIFF_OVERPASS_URL" in message and "--osm" in message
    assert isinstance(info.value, ConnectionError)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("500", "HTTP 500"),
        ("429", "overloaded (HTTP 429"),
        ("504", "overloaded (HTTP 504"),
        ("garbage", "not Overpass JSON"),
        ("remark", "runtime error"),
    ],
)
def test_http_errors_become_overpass_error(
    server: OverpassTestServer, tmp_path: Path, mode: str, expected: str
) -> None:
    server.default_mode = mode
    settings = make_settings(server.url, tmp_path, use_cache=True, overpass_rate_limit=False)
    with pytest.raises(OverpassError) as info:
        fetch_elements(TOWN_BBOX, settings, max_retries=1, retry_pause_s=0)
    message = str(info.value)
    assert expected in message
    assert server.url in message and "retry later" in message
    # errors are never cached
    assert not list((tmp_path / "cache" / "overpass").glob("*.json"))


def test_busy_server_is_retried(server: OverpassTestServer, tmp_path: Path) -> None:
    server.modes = ["429", "504"]
    settings = make_settings(server.url, tmp_path, overpass_rate_limit=False)
    elements = fetch_elements(TOWN_BBOX, settings, max_retries=2, retry_pause_s=0)
    assert len(elements) > 0
    assert len(server.queries) == 3


def test_unreachable_server(tmp_path: Path) -> None:
    # conftest points GEODIFF_OVERPASS_URL at the discard port, where nothing listens
    settings = get_settings(overpass_rate_limit=False, overpass_timeout_s=5)
    with pytest.raises(OverpassError, match="could not connect to the Overpass server at http://127.0.0.1:9"):
        load_features(TOWN_BBOX, settings=settings)


def test_empty_area(tmp_path: Path) -> None:
    empty = {"version": 0.6, "generator": "test", "elements": []}
    with OverpassTestServer(document=empty) as srv:
        settings = make_settings(srv.url, tmp_path, overpass_rate_limit=False)
        with pytest.raises(EmptyAreaError, match="W,S,E,N"):
            load_features(TOWN_BBOX, settings=settings)
        assert len(fetch_elements(TOWN_BBOX, settings, allow_empty=True)) == 0
        assert len(load_features(TOWN_BBOX, settings=settings, allow_empty=True)) == 0


def test_status_that_never_frees_a_slot_is_waited_out(server: OverpassTestServer, tmp_path: Path) -> None:
    server.status_mode = "running"  # a server that keeps saying queries are running
    settings = make_settings(server.url, tmp_path, overpass_max_wait_s=3)
    start = time.monotonic()
    with pytest.raises(OverpassError, match="no free slot for 3 s.*GEODIFF_OVERPASS_MAX_WAIT_S"):
        fetch_elements(TOWN_BBOX, settings)
    assert time.monotonic() - start < 15
    assert server.queries == []  # it never sent the query


def test_too_many_subqueries_are_refused_before_any_request(
    server: OverpassTestServer, tmp_path: Path
) -> None:
    settings = make_settings(
        server.url,
        tmp_path,
        overpass_max_query_area_m2=5_000.0,
        overpass_max_subqueries=4,
        overpass_rate_limit=False,
    )
    with pytest.raises(
        OverpassError, match=r"needs \d+ Overpass sub-queries.*GEODIFF_OVERPASS_MAX_SUBQUERIES"
    ):
        fetch_elements(TOWN_BBOX, settings)
    assert server.queries == []


def test_osmnx_internals_geodiff_wraps_still_exist() -> None:
    """geodiff pins osmnx < 3 and wraps three private helpers (progress per sub-query, the sub-query cap, the
    bounded /status wait); if an osmnx release renames them, this fails before users do."""
    import inspect

    from osmnx import _errors, _overpass

    assert list(inspect.signature(_overpass._get_overpass_pause).parameters)[:1] == ["base_endpoint"]
    assert {"recursion_pause", "default_pause"} <= set(
        inspect.signature(_overpass._get_overpass_pause).parameters
    )
    assert callable(_overpass._make_overpass_polygon_coord_strs) and callable(_overpass._overpass_request)
    assert issubclass(_errors.InsufficientResponseError, Exception)
    assert int(osmnx.__version__.split(".")[0]) == 2


def test_a_full_disk_leaves_no_truncated_cache_file(
    server: OverpassTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """osmnx wrote its cache in place: a full disk left truncated JSON that every later run failed to parse."""
    import errno
    import json

    import geodiff.osm.overpass as overpass
    from geodiff.errors import GeodiffWarning

    settings = make_settings(server.url, tmp_path, use_cache=True, overpass_rate_limit=False)
    real_dump = json.dump

    def full(obj, fh, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        fh.write(json.dumps(obj)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(overpass.json, "dump", full)
    with pytest.warns(GeodiffWarning, match="not saved in the cache"):
        features = load_features(TOWN_BBOX, settings=settings)
    assert counts(features) == TOWN_COUNTS  # the run goes on with the downloaded map
    assert list((tmp_path / "cache" / "overpass").iterdir()) == []  # no truncated file, no partial file

    monkeypatch.setattr(overpass.json, "dump", real_dump)
    load_features(TOWN_BBOX, settings=settings)  # cached now
    (cached,) = (tmp_path / "cache" / "overpass").glob("*.json")
    cached.write_text(cached.read_text()[:100])  # as an older geodiff left it on a full disk
    assert counts(load_features(TOWN_BBOX, settings=settings)) == TOWN_COUNTS  # a miss: downloaded again
    assert len(server.queries) == 3 and json.loads(cached.read_text())
