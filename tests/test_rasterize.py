import geopandas as gpd
import numpy as np
import pytest
from pyproj import CRS
from shapely.geometry import LineString, Point, Polygon, box

from geodiff.classes import BACKGROUND, BUILDING, ROAD, VEGETATION, WATER
from geodiff.grid import BBox, grid_for_bbox
from geodiff.rasterize import rasterize_features

UTM = CRS.from_epsg(32632)
X0, Y0 = 370000.0, 4840000.0  # a 200 m x 200 m square grid at 1 m/px


def grid(res=1.0):
    return grid_for_bbox(BBox(X0, Y0, X0 + 200, Y0 + 200, crs=UTM), res)


def features(rows):
    return gpd.GeoDataFrame(
        {"class_id": [r[0] for r in rows], "width_m": [r[1] for r in rows], "kind": [r[2] for r in rows]},
        geometry=[r[3] for r in rows],
        crs=UTM,
    )


def px(g, x, y):
    r, c = g.world_to_pixel(X0 + x, Y0 + y)
    return int(round(float(r))), int(round(float(c)))


def test_empty_features_give_background():
    g = grid()
    out = rasterize_features(features([]), g)
    assert out.shape == g.shape and out.dtype == np.uint8 and not out.any()


def test_polygon_area_and_position():
    g = grid()
    out = rasterize_features(features([(BUILDING, 0.0, "area", box(X0 + 20, Y0 + 30, X0 + 60, Y0 + 50))]), g)
    assert (out == BUILDING).sum() == pytest.approx(40 * 20, abs=2)
    assert out[px(g, 40, 40)] == BUILDING
    assert out[px(g, 10, 40)] == BACKGROUND


@pytest.mark.parametrize("width", [4.0, 10.0, 22.0])
def test_roads_are_buffered_to_their_width(width):
    g = grid(0.5)
    road = LineString([(X0 + 10, Y0 + 100), (X0 + 190, Y0 + 100)])
    out = rasterize_features(features([(ROAD, width, "line", road)]), g)
    column = out[:, px(g, 100, 100)[1]]
    assert (column == ROAD).sum() * 0.5 == pytest.approx(width, abs=1.0)


def test_paint_order_building_over_road_over_water_over_vegetation():
    g = grid()
    park = box(X0, Y0, X0 + 200, Y0 + 200)
    pond = box(X0 + 50, Y0 + 50, X0 + 150, Y0 + 150)
    road = LineString([(X0, Y0 + 100), (X0 + 200, Y0 + 100)])
    house = box(X0 + 90, Y0 + 90, X0 + 110, Y0 + 110)
    rows = [
        (BUILDING, 0.0, "area", house),
        (ROAD, 6.0, "line", road),
        (WATER, 0.0, "area", pond),
        (VEGETATION, 0.0, "area", park),
    ]
    out = rasterize_features(features(rows), g)
    # the order of rows must not matter
    out2 = rasterize_features(features(rows[::-1]), g)
    np.testing.assert_array_equal(out, out2)
    assert out[px(g, 100, 100)] == BUILDING
    assert out[px(g, 70, 100)] == ROAD
    assert out[px(g, 70, 70)] == WATER
    assert out[px(g, 20, 20)] == VEGETATION


def test_point_trees_become_discs():
    g = grid(0.5)
    out = rasterize_features(features([(VEGETATION, 5.0, "point", Point(X0 + 100, Y0 + 100))]), g)
    area = (out == VEGETATION).sum() * 0.25
    assert area == pytest.approx(np.pi * 2.5**2, rel=0.15)


def test_coastline_fills_sea_on_the_right():
    g = grid()
    # west -> east: land on the left (north), sea on the right (south)
    coast = LineString([(X0 - 10, Y0 + 80), (X0 + 100, Y0 + 90), (X0 + 210, Y0 + 80)])
    out = rasterize_features(features([(WATER, 0.0, "coastline", coast)]), g)
    assert out[px(g, 100, 20)] == WATER
    assert out[px(g, 100, 150)] == BACKGROUND
    # reversed direction swaps land and sea
    rev = rasterize_features(features([(WATER, 0.0, "coastline", LineString(coast.coords[::-1]))]), g)
    assert rev[px(g, 100, 20)] == BACKGROUND and rev[px(g, 100, 150)] == WATER


def test_island_ring_is_land_surrounded_by_sea():
    g = grid()
    # counter-clockwise ring: land inside (on the left), sea outside
    ring = Polygon(
        [(X0 + 60, Y0 + 60), (X0 + 140, Y0 + 60), (X0 + 140, Y0 + 140), (X0 + 60, Y0 + 140)]
    ).exterior
    assert ring.is_ccw
    out = rasterize_features(features([(WATER, 0.0, "coastline", LineString(ring.coords))]), g)
    assert out[px(g, 100, 100)] == BACKGROUND
    assert out[px(g, 10, 10)] == WATER and out[px(g, 190, 190)] == WATER


def test_features_in_lonlat_are_projected():
    g = grid_for_bbox(BBox(7.418, 43.732, 7.422, 43.735), 1.0)
    feats = gpd.GeoDataFrame(
        {"class_id": [BUILDING], "width_m": [0.0], "kind": ["area"]},
        geometry=[box(7.4195, 43.7330, 7.4205, 43.7340)],
        crs="EPSG:4326",
    )
    out = rasterize_features(feats, g)
    # 0.001 deg lon x 0.001 deg lat at 43.73 N ~ 80 m x 111 m
    assert (out == BUILDING).sum() == pytest.approx(80.4 * 111.1, rel=0.03)
