"""Maps over a colour photograph (a red-orange fundus) are drawn in a scale whose hues the photograph lacks; over a
grey scan in Viridis: in the page's figures, the lesson's grids and the exported PNGs alike."""

import io

import numpy as np
from PIL import Image
from plotly.colors import get_colorscale

from core.data import load_dataset
from explorer import plots, report


def fundus_like(side: int = 32) -> np.ndarray:
    rgb = np.zeros((side, side, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 190, 90, 40  # the orange-red of a fundus photograph
    return rgb


def grey(side: int = 32) -> np.ndarray:
    return np.repeat(np.linspace(0, 255, side * side).reshape(side, side, 1), 3, axis=2).astype(np.uint8)


def heat_colours(fig) -> list:
    scales = [t.colorscale for t in fig.data if t.type == "heatmap" and t.colorscale]
    return scales + ([fig.layout.coloraxis.colorscale] if fig.layout.coloraxis.colorscale else [])


def test_the_scale_follows_the_image():
    heat = np.random.default_rng(0).random((32, 32))
    ice, viridis = ([colour for _, colour in get_colorscale(name)] for name in (plots.HEAT_ON_COLOUR, plots.HEAT))
    assert ice != viridis
    on_fundus = heat_colours(plots.image_with_map(fundus_like(), heat))
    on_grey = heat_colours(plots.image_with_map(grey(), heat))
    assert [[colour for _, colour in scale] for scale in on_fundus] == [ice]
    assert [[colour for _, colour in scale] for scale in on_grey] == [viridis]
    grid = plots.overlay_grid([(fundus_like(), heat, "a")], 1)
    assert [colour for _, colour in grid.layout.coloraxis.colorscale] == ice


def test_the_fundus_test_images_count_as_colour_and_the_brain_scans_as_grey():
    for name, expected, every in (("eye_disease", plots.HEAT_ON_COLOUR, 1), ("brain_tumor", plots.HEAT, 20)):
        ds = load_dataset(name, "test", input_size=64)
        scales = [plots.heat_scale((ds[i][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
                  for i in range(0, len(ds), every)]
        share = scales.count(expected) / len(scales)
        assert share >= (0.99 if name == "eye_disease" else 1.0), (name, share)  # a few fundus photos are near grey


def test_the_exported_png_colours_the_map_as_the_page_does():
    heat = np.tile(np.linspace(0, 1, 32), (32, 1))
    for pixels, scale in ((fundus_like(), plots.HEAT_ON_COLOUR), (grey(), plots.HEAT)):
        drawn = report.overlay(pixels, heat, 1.0)  # opacity 1: the map's own colours
        table = report.colour_table(scale)
        assert np.abs(drawn[0, -1].astype(int) - table[-1].round()).max() <= 1  # the top of the scale at value 1
        png = Image.open(io.BytesIO(report.labelled_png(pixels, heat, 1.0, "t")))
        assert png.size[0] > report.EXPORT_SIDE
