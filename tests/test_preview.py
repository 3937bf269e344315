"""PNG previews: polygons land on the right pixels, also on a decimated read."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from PIL import Image
from rasterio.transform import from_origin

from segearth_geo.errors import OutputError
from segearth_geo.preview import label_colour, render_preview
from tests.geo_fixtures import UTM, UTM_ORIGIN, write_raster


@pytest.mark.parametrize("max_side", [1024, 100])
def test_polygon_is_drawn_where_it_is(tmp_path, max_side):
    data = np.full((3, 200, 300), 30, np.uint8)
    path = write_raster(tmp_path / "s.tif", data, crs=UTM, transform=from_origin(*UTM_ORIGIN, 0.5, 0.5))
    x0, y0 = UTM_ORIGIN
    square = shapely.box(x0 + 50 * 0.5, y0 - 150 * 0.5, x0 + 150 * 0.5, y0 - 50 * 0.5)  # pixels 50..150
    gdf = gpd.GeoDataFrame({"label": ["roof"]}, geometry=gpd.GeoSeries([square], crs=UTM))
    png = render_preview(path, gdf, tmp_path / "p.png", max_side=max_side)
    with Image.open(png) as image:
        width, height = image.size
        rgb = np.asarray(image.convert("RGB")).astype(int)
    scale = 1 if max_side >= 300 else 300 / width
    assert max(width, height) <= max_side and width == pytest.approx(300 / scale, abs=1)
    inside = rgb[int(100 / scale), int(100 / scale)]
    outside = rgb[int(180 / scale), int(250 / scale)]
    assert tuple(outside) == (30, 30, 30)
    colour = np.array(label_colour("roof"))
    assert np.abs(inside - 30).sum() > 30 and np.abs(inside - colour).sum() < np.abs(outside - colour).sum()
    with pytest.raises(OutputError, match=".png"):
        render_preview(path, gdf, tmp_path / "p.jpg")
