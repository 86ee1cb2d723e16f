"""Download raw OSM elements for a bbox from the Overpass API, through osmnx.

osmnx does the query building, splitting of large areas into sub-queries (``max_query_area_size``), the
server slot etiquette (``/status``) and the on-disk response cache. geodiff's :class:`~geodiff.settings.Settings`
are applied to ``osmnx.settings`` only for the duration of one call (then restored), and every failure mode
becomes an :class:`~geodiff.errors.OverpassError` that says what happened, which URL, and what to do.

Differences from plain osmnx behaviour, on purpose:

- HTTP 429/504 ("too many requests"/"gateway timeout") are retried ``max_retries`` times after
  ``retry_pause_s`` (osmnx alone retries forever every 55 s); other HTTP errors fail at once.
- A ``remark`` with a runtime error in an otherwise successful response (the server ran out of time or
  memory, so the data are incomplete) is an error, not a silently partial map.
- An unparseable or unreachable ``/status`` endpoint costs a 5 s pause instead of osmnx's 60 s.
- osmnx's DNS-over-HTTPS fallback is off (offline it could hang for the full timeout) and its global
  ``socket.getaddrinfo`` patch is undone afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import requests

from geodiff._version import __version__
from geodiff.classes import overpass_tag_filter
from geodiff.errors import EmptyAreaError, GeodiffWarning, InvalidParameterError, OverpassError
from geodiff.grid import BBox
from geodiff.osm.features import empty_feature_set, lonlat_bounds
from geodiff.progress import ProgressCallback, report
from geodiff.settings import Settings, get_settings

# osmnx.settings is process-global: one geodiff fetch at a time may own it.
_LOCK = threading.Lock()
_STATUS_FALLBACK_PAUSE_S = 5.0
_WHAT_TO_DO = (
    "retry later, point GEODIFF_OVERPASS_URL at another Overpass server "
    "(e.g. https://overpass.kumi.systems/api), or use a downloaded extract with --osm FILE"
)


class _ServerBusy(Exception):
    """429/504 from the interpreter: worth retrying after a pause."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.url = status, reason, url


class _ServerFailed(Exception):
    """Any other non-success answer from the interpreter (message is user-facing)."""


class _WaitedTooLong(Exception):
    """The server's /status kept saying no slot was free for longer than geodiff waits."""


def _interpreter_url(base: str) -> str:
    return base.rstrip("/") + "/interpreter"


def _check_response(response: requests.Response, *args: object, **kwargs: object) -> None:
    """requests response hook: turn bad interpreter answers into exceptions before osmnx sees them."""
    if "/interpreter" not in (response.url or ""):
        return  # /status answers are osmnx's business
    url = response.url.split("?", 1)[0]
    if response.status_code in (429, 504):
        raise _ServerBusy(response.status_code, response.reason or "", url)
    if response.status_code >= 400:
        raise _ServerFailed(
            f"the Overpass server at {url} answered HTTP {response.status_code} {response.reason or ''}".rstrip()
        )
    # Overpass puts a runtime-error "remark" after the (then incomplete) elements: look at the tail only.
    tail = response.content[-4096:]
    if b'"remark"' in tail:
        try:
            remark = str(json.loads(response.content).get("remark", ""))
        except (ValueError, AttributeError):
            return  # malformed JSON: osmnx reports it and we translate that
        if "error" in remark.lower():
            raise _ServerFailed(
                f"the Overpass server at {url} could not finish the query ({remark.strip()}); the area may be "
                "too large or busy: use a smaller bbox or a smaller GEODIFF_OVERPASS_MAX_QUERY_AREA_M2"
            )


def _usable_cache(settings: Settings) -> Path:
    """The Overpass cache folder, created; a clear error when it cannot be (a file, no permission)."""
    folder = Path(settings.cache_dir) / "overpass"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidParameterError(
            f"the cache folder {folder} is not usable ({exc.strerror or exc}): point GEODIFF_CACHE_DIR at a "
            "writable folder, or set GEODIFF_USE_CACHE=0"
        ) from None
    return folder


def _apply_settings(ox: Any, settings: Settings) -> dict[str, Any]:
    """Set ``osmnx.settings`` from geodiff settings; return the previous values for restoring."""
    wanted = {
        "overpass_url": settings.overpass_url.rstrip("/"),
        "requests_timeout": settings.overpass_timeout_s,
        "use_cache": settings.use_cache,
        "cache_folder": str(
            _usable_cache(settings) if settings.use_cache else Path(settings.cache_dir) / "overpass"
        ),
        "max_query_area_size": float(settings.overpass_max_query_area_m2),
        "overpass_rate_limit": settings.overpass_rate_limit,
        "cache_only_mode": False,
        "doh_url_template": None,
        "http_user_agent": f"geodiff/{__version__} (OSMnx {ox.__version__})",
        "requests_kwargs": {
            **dict(ox.settings.requests_kwargs),
            "hooks": {"response": [_check_response]},
        },
    }
    previous = {name: getattr(ox.settings, name) for name in wanted}
    for name, value in wanted.items():
        setattr(ox.settings, name, value)
    return previous


def _save_to_cache_atomically(url: str, response_json: Any, ok: bool) -> None:  # noqa: FBT001 - osmnx's signature
    """osmnx's cache save, but complete or absent: written beside its name, flushed, then renamed. On a full disk
    the response is not cached (a warning says so) and the run goes on with it; osmnx alone wrote the file in
    place, leaving truncated JSON that every later run failed to parse."""
    import warnings

    from osmnx import _http, settings

    if not settings.use_cache or not ok or (isinstance(response_json, dict) and "remark" in response_json):
        return  # what osmnx does not cache either (geodiff turns remarks into errors before this)
    target = Path(_http._resolve_cache_filepath(url))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(response_json, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(
            f"the Overpass response was not saved in the cache {target.parent} ({exc.strerror or exc}): the next "
            "run will download it again; free some space there or set GEODIFF_USE_CACHE=0",
            GeodiffWarning,
            stacklevel=2,
        )


def _retrieve_unless_corrupt(retrieve: Any) -> Any:
    """osmnx's cache lookup, with a cache file that does not parse (an older run's truncated write) treated as
    a miss and removed, instead of a JSON traceback on every later run."""

    def lookup(url: str) -> Any:
        from osmnx import _http

        try:
            return retrieve(url)
        except (ValueError, UnicodeDecodeError):
            path = _http._check_cache(url)
            if path is not None:
                with contextlib.suppress(OSError):
                    Path(path).unlink()
            return None

    return lookup


@contextmanager
def osmnx_settings(settings: Settings) -> Iterator[Any]:
    """Apply ``settings`` to osmnx for the duration of the block, then restore everything.

    Yields the ``osmnx`` module. Also scopes osmnx's global ``socket.getaddrinfo`` patch and the shorter
    ``/status`` fallback pause, and serialises concurrent callers (osmnx settings are process-global).
    """
    import osmnx as ox
    from osmnx import _http, _overpass

    with _LOCK:
        previous = _apply_settings(ox, settings)
        original_getaddrinfo = socket.getaddrinfo
        original_pause = _overpass._get_overpass_pause
        deadline = time.monotonic() + settings.overpass_max_wait_s

        def bounded_pause(base_endpoint: str, **_: Any) -> float:
            # osmnx asks /status again and again while the server says queries are running (forever if it
            # keeps saying so); geodiff gives up after overpass_max_wait_s in all
            if time.monotonic() > deadline:
                raise _WaitedTooLong(base_endpoint)
            pause = original_pause(base_endpoint, default_pause=_STATUS_FALLBACK_PAUSE_S, recursion_pause=5)
            if time.monotonic() + pause > deadline:
                raise _WaitedTooLong(base_endpoint)
            return pause

        _overpass._get_overpass_pause = bounded_pause
        original_save, original_retrieve = _http._save_to_cache, _http._retrieve_from_cache
        _http._save_to_cache = _save_to_cache_atomically
        _http._retrieve_from_cache = _retrieve_unless_corrupt(original_retrieve)
        try:
            yield ox
        finally:
            _http._save_to_cache, _http._retrieve_from_cache = original_save, original_retrieve
            _overpass._get_overpass_pause = original_pause
            socket.getaddrinfo = original_getaddrinfo
            for name, value in previous.items():
                setattr(ox.settings, name, value)


def _fetch_once(
    bounds: tuple[float, float, float, float], settings: Settings, progress: ProgressCallback | None
) -> gpd.GeoDataFrame | None:
    """One osmnx download; None when Overpass has no matching features. Raises _ServerBusy/OverpassError."""
    from osmnx import _overpass
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    url = _interpreter_url(settings.overpass_url)
    with osmnx_settings(settings) as ox:
        # Wrap two osmnx internals to report per-sub-query progress (how many, and each one done).
        total, done = 1, 0
        original_split = _overpass._make_overpass_polygon_coord_strs
        original_request = _overpass._overpass_request

        def _counting_split(polygon: Any) -> list[str]:
            nonlocal total
            coord_strs = original_split(polygon)
            total = max(1, len(coord_strs))
            if total > settings.overpass_max_subqueries:
                raise OverpassError(
                    f"this bbox needs {total} Overpass sub-queries (of at most "
                    f"{settings.overpass_max_query_area_m2 / 1e6:g} km^2 each), more than the "
                    f"{settings.overpass_max_subqueries} geodiff sends for one area: use a smaller bbox, a "
                    "downloaded extract (--osm FILE, e.g. from download.geofabrik.de), or raise "
                    "GEODIFF_OVERPASS_MAX_SUBQUERIES"
                )
            report(progress, 0.0, f"querying Overpass ({total} request{'s' if total > 1 else ''})")
            return coord_strs

        def _counting_request(data: Any) -> dict[str, Any]:
            nonlocal done
            result = original_request(data)
            done += 1
            report(progress, 0.9 * done / max(total, done), f"Overpass query {done}/{max(total, done)}")
            return result

        _overpass._make_overpass_polygon_coord_strs = _counting_split
        _overpass._overpass_request = _counting_request
        try:
            return ox.features_from_bbox(bounds, tags=overpass_tag_filter())
        except (_ServerBusy, OverpassError):
            raise
        except _WaitedTooLong as exc:
            raise OverpassError(
                f"the Overpass server at {exc} had no free slot for {settings.overpass_max_wait_s} s (its /status "
                f"kept reporting running queries): {_WHAT_TO_DO} (or raise GEODIFF_OVERPASS_MAX_WAIT_S)"
            ) from None
        except _ServerFailed as exc:
            raise OverpassError(f"{exc}: {_WHAT_TO_DO}") from None
        except requests.Timeout:
            raise OverpassError(
                f"the Overpass server at {url} did not answer within {settings.overpass_timeout_s} s: "
                f"{_WHAT_TO_DO} (or raise GEODIFF_OVERPASS_TIMEOUT_S, or use a smaller bbox)"
            ) from None
        except requests.ConnectionError as exc:
            raise OverpassError(
                f"could not connect to the Overpass server at {url} ({type(exc).__name__}); check the internet "
                f"connection, or {_WHAT_TO_DO}"
            ) from None
        except requests.RequestException as exc:
            raise OverpassError(
                f"request to the Overpass server at {url} failed ({exc}): {_WHAT_TO_DO}"
            ) from None
        except InsufficientResponseError as exc:
            if "No matching features" in str(exc):
                return None
            raise OverpassError(
                f"the Overpass server at {url} sent a response that is not Overpass JSON: {_WHAT_TO_DO}"
            ) from None
        except (ResponseStatusCodeError, KeyError, TypeError, AttributeError) as exc:
            raise OverpassError(
                f"the Overpass server at {url} sent an unusable response ({type(exc).__name__}): {_WHAT_TO_DO}"
            ) from None
        finally:
            _overpass._overpass_request = original_request
            _overpass._make_overpass_polygon_coord_strs = original_split


def fetch_elements(
    bbox: BBox | str | tuple[float, float, float, float],
    settings: Settings | None = None,
    *,
    allow_empty: bool = False,
    max_retries: int = 2,
    retry_pause_s: float = 30.0,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Download the raw OSM elements any class rule can use inside ``bbox`` from Overpass (via osmnx).

    Parameters
    ----------
    bbox
        Area (any CRS; tuples and ``"W,S,E,N"`` text are lon/lat).
    settings
        geodiff settings (Overpass URL, timeout, cache, sub-query area, rate limit); default
        :func:`geodiff.settings.get_settings`.
    allow_empty
        Return an empty GeoDataFrame instead of raising :class:`EmptyAreaError` when the area has no
        matching OSM elements (e.g. open sea).
    max_retries, retry_pause_s
        How often, and after how long a pause, to retry when the server answers 429 or 504. Sub-queries
        that already succeeded come from the cache on a retry (when the cache is on).
    progress
        Optional ``(fraction, message)`` callback, advanced per sub-query.

    Returns
    -------
    geopandas.GeoDataFrame
        osmnx features (EPSG:4326, ``(element, id)`` index, one column per tag); feed it to
        :func:`geodiff.osm.features.classify_elements`.

    Raises
    ------
    OverpassError
        Timeout, connection failure, HTTP error, busy server after all retries, or a malformed response.
    EmptyAreaError
        No matching elements (unless ``allow_empty``).
    """
    settings = settings or get_settings()
    bounds = lonlat_bounds(bbox)
    for attempt in range(max_retries + 1):
        try:
            gdf = _fetch_once(bounds, settings, progress)
            break
        except _ServerBusy as busy:
            if attempt >= max_retries:
                raise OverpassError(
                    f"the Overpass server at {busy.url} is overloaded (HTTP {busy.status} {busy.reason}) after "
                    f"{attempt + 1} attempt(s): {_WHAT_TO_DO}"
                ) from None
            report(progress, 0.0, f"Overpass busy (HTTP {busy.status}); retrying in {retry_pause_s:g} s")
            time.sleep(retry_pause_s)
    report(progress, 1.0, "Overpass download done")
    if gdf is not None and gdf.index.has_duplicates:
        # Sub-queries of a split bbox all return the elements that straddle their edges; osmnx keeps them all.
        gdf = gdf[~gdf.index.duplicated(keep="first")]
    if gdf is None or len(gdf) == 0:
        if allow_empty:
            return empty_feature_set()
        w, s, e, n = bounds
        raise EmptyAreaError(
            f"OpenStreetMap has no buildings, roads, water or vegetation in {w:.6f},{s:.6f},{e:.6f},{n:.6f}: "
            "check the bbox (order W,S,E,N in lon/lat) or choose an area with mapped features"
        )
    return gdf
