"""Build the embedded offline sample area ``geodiff/data/sample_monaco.geojson``.

The sample is a small part of Monaco (Port Hercule and La Condamine): the classified features of the
OpenStreetMap extract ``monaco_port_hercule.osm.bz2`` (from ../shared/data/osm, ODbL), reduced to what the
rasterizer needs (class, width, geometry), with the sea pre-computed from the coastline as polygons, for the
sample bbox plus a one-window margin (synthesis looks a little beyond the bbox). Run from the repository root:

    python samples/make_sample_area.py [--osm PATH]

Map data (c) OpenStreetMap contributors, ODbL 1.0: the output keeps that attribution in its properties.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import geopandas as gpd
import shapely
from shapely.geometry import box, mapping

from geodiff import ATTRIBUTION
from geodiff.classes import CLASSES, WATER
from geodiff.grid import BBox, grid_for_bbox
from geodiff.osm import load_features
from geodiff.rasterize import sea_polygons
from geodiff.samples import SAMPLE_BBOX, SAMPLE_PATH

MARGIN_M = 400.0  # more than one 256 px window at the default 1 m/px
REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--osm", type=Path, default=REPO.parent / "shared/data/osm/monaco_port_hercule.osm.bz2"
    )
    args = parser.parse_args()

    grid = grid_for_bbox(BBox(*SAMPLE_BBOX), 1.0)
    left, bottom, right, top = grid.bounds
    frame = box(left - MARGIN_M, bottom - MARGIN_M, right + MARGIN_M, top + MARGIN_M)
    frame_lonlat = gpd.GeoSeries([frame], crs=grid.crs).to_crs(4326).total_bounds
    feats = load_features(BBox(*frame_lonlat), osm_path=args.osm).to_crs(grid.crs)
    coast = feats[feats["kind"] == "coastline"]
    feats = feats[feats["kind"] != "coastline"]
    sea = sea_polygons(coast.geometry.to_numpy(), frame)
    rows = [(WATER, 0.0, g) for g in sea] + list(
        zip(
            feats["class_id"],
            feats["width_m"],
            shapely.intersection(feats.geometry.to_numpy(), frame),
            strict=True,
        )
    )
    out = gpd.GeoDataFrame(
        {
            "class": [CLASSES[int(c)].name for c, _, _ in rows],
            "width": [round(float(w), 2) for _, w, _ in rows],
        },
        geometry=[g for _, _, g in rows],
        crs=grid.crs,
    )
    out = out[~out.geometry.is_empty].to_crs(4326)
    out["geometry"] = shapely.set_precision(out.geometry.to_numpy(), 1e-6)  # ~0.1 m, keeps the file small
    out = out[~out.geometry.is_empty]
    features = [
        {"type": "Feature", "properties": {"class": c, "width": w}, "geometry": mapping(g)}
        for c, w, g in zip(out["class"], out["width"], out.geometry, strict=True)
    ]
    doc = {
        "type": "FeatureCollection",
        "name": "geodiff sample area: Monaco, Port Hercule",
        "attribution": ATTRIBUTION,
        "license": "ODbL-1.0",
        "source": "OpenStreetMap extract of Monaco, 2021-12-03 (Geofabrik), cropped; sea filled from coastline",
        "bbox_wsen": list(SAMPLE_BBOX),
        "features": features,
    }
    SAMPLE_PATH.write_text(json.dumps(doc, separators=(",", ":")))
    print(f"wrote {SAMPLE_PATH} ({SAMPLE_PATH.stat().st_size / 1024:.0f} KiB, {len(features)} features)")


if __name__ == "__main__":
    main()
