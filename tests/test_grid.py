import math

import numpy as np
import pytest
from pyproj import CRS, Transformer

from geodiff.errors import AreaTooLargeError, InvalidBBoxError, InvalidParameterError
from geodiff.grid import BBox, grid_for_bbox, parse_bbox, utm_crs_for

MONACO = "7.4180,43.7320,7.4220,43.7350"


def test_parse_bbox_accepts_common_separators():
    assert parse_bbox(MONACO).as_tuple() == (7.418, 43.732, 7.422, 43.735)
    assert parse_bbox("7.418 43.732 7.422 43.735").as_tuple() == (7.418, 43.732, 7.422, 43.735)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("7.422,43.732,7.418,43.735", "inverted"),
        ("7.418,43.735,7.422,43.732", "inverted"),
        ("7.418,43.732,7.418,43.735", "degenerate"),
        ("7.418,43.732,7.422", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("7.418,-91,7.422,43.735", "outside [-90, 90]"),
        ("43.7,7.4,43.8,95", "outside [-90, 90]"),
        ("-181,0,1,1", "outside [-180, 180]"),
        ("nan,0,1,1", "non-finite"),
    ],
)
def test_bad_bboxes_say_what_is_wrong(text, fragment):
    with pytest.raises(InvalidBBoxError, match=re_escape(fragment)):
        parse_bbox(text)


def re_escape(s):
    import re

    return re.escape(s)


def test_bad_bbox_is_also_a_value_error():
    with pytest.raises(ValueError):
        parse_bbox("1,2,3")


def test_utm_zone_of_centre():
    assert utm_crs_for(7.42, 43.73).to_epsg() == 32632
    assert utm_crs_for(24.94, 60.17).to_epsg() == 32635
    assert utm_crs_for(-122.29, 37.81).to_epsg() == 32610
    assert utm_crs_for(151.2, -33.9).to_epsg() == 32756


def test_grid_covers_bbox_and_is_snapped():
    box = parse_bbox(MONACO)
    g = grid_for_bbox(box, 0.5)
    assert g.crs.to_epsg() == 32632
    assert g.resolution == 0.5
    left, bottom, right, top = g.bounds
    assert left / 0.5 == int(left / 0.5) and top / 0.5 == int(top / 0.5)
    t = Transformer.from_crs(4326, g.crs, always_xy=True)
    for lon, lat in [(7.418, 43.732), (7.422, 43.735), (7.418, 43.735), (7.422, 43.732)]:
        x, y = t.transform(lon, lat)
        assert left <= x <= right and bottom <= y <= top
    # ~320 m x 330 m at 0.5 m/px
    assert 600 < g.width < 700 and 640 < g.height < 720


def test_pixel_world_round_trip():
    g = grid_for_bbox(parse_bbox(MONACO), 0.37)
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, g.height, 50), rng.uniform(0, g.width, 50)
    x, y = g.pixel_to_world(rows, cols)
    r2, c2 = g.world_to_pixel(x, y)
    np.testing.assert_allclose(r2, rows, atol=1e-6)
    np.testing.assert_allclose(c2, cols, atol=1e-6)
    # pixel (0, 0) centre is half a pixel inside the top-left corner
    x0, y0 = g.pixel_to_world(0, 0)
    assert math.isclose(float(x0), g.bounds[0] + 0.185) and math.isclose(float(y0), g.bounds[3] - 0.185)


def test_sub_bbox_grid_shares_pixel_edges():
    big = grid_for_bbox(parse_bbox(MONACO), 0.5)
    small = grid_for_bbox(parse_bbox("7.4190,43.7330,7.4200,43.7340"), 0.5)
    dc = (small.transform.c - big.transform.c) / 0.5
    dr = (big.transform.f - small.transform.f) / 0.5
    assert dc == round(dc) and dr == round(dr) and dc > 0 and dr > 0


def test_projected_bbox_and_explicit_crs():
    box = BBox(500000, 4800000, 500100, 4800050, crs=CRS.from_epsg(32632))
    g = grid_for_bbox(box, 1.0)
    assert (g.width, g.height) == (100, 50) and g.crs.to_epsg() == 32632
    g2 = grid_for_bbox(parse_bbox(MONACO), 1.0, crs="EPSG:32631")  # a neighbouring UTM zone on request
    assert g2.crs.to_epsg() == 32631


def test_bbox_crs_only_describes_the_area():
    """A Web Mercator bbox (a QGIS canvas over OSM tiles) gets the local UTM grid, as the same area in lon/lat."""
    lonlat = parse_bbox(MONACO)
    t = Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = t.transform(lonlat.west, lonlat.south)
    x1, y1 = t.transform(lonlat.east, lonlat.north)
    merc = BBox(x0, y0, x1, y1, crs=CRS.from_epsg(3857))
    g_merc, g_ll = grid_for_bbox(merc, 1.0), grid_for_bbox(lonlat, 1.0)
    assert g_merc.crs.to_epsg() == g_ll.crs.to_epsg() == 32632
    assert abs(g_merc.width - g_ll.width) <= 1 and abs(g_merc.height - g_ll.height) <= 1


@pytest.mark.parametrize(
    ("crs", "fragment"),
    [("EPSG:3857", "Web Mercator"), ("EPSG:2227", "not metres"), ("EPSG:4326", "geographic")],
)
def test_output_crs_must_be_metric(crs, fragment):
    with pytest.raises(InvalidParameterError, match=fragment):
        grid_for_bbox(parse_bbox(MONACO), 1.0, crs=crs)


def test_antimeridian_bbox_says_split():
    with pytest.raises(InvalidBBoxError, match="antimeridian"):
        parse_bbox("179.9,-17,-179.9,-16")


def test_geographic_output_crs_is_refused():
    with pytest.raises(InvalidParameterError, match="projected"):
        grid_for_bbox(parse_bbox(MONACO), 1.0, crs="EPSG:4326")


@pytest.mark.parametrize("res", [0, -1, float("nan"), float("inf")])
def test_bad_resolution(res):
    with pytest.raises(InvalidParameterError, match="resolution"):
        grid_for_bbox(parse_bbox(MONACO), res)


def test_too_large_says_pixels_and_fix():
    with pytest.raises(AreaTooLargeError) as info:
        grid_for_bbox(parse_bbox("7,43,8,44"), 0.5, max_pixels=10_000_000)
    msg = str(info.value)
    assert "pixels" in msg and "coarser resolution" in msg and "smaller bbox" in msg
