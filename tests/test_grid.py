"""Captioned grids: titles, row and column titles, class captions, label-map legends, upscaling; the plain
grid still works."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.data.facades_synth import facades_spec
from genlab.data.tasks import TaskSpec, label_map_legend
from genlab.grid import captioned_grid, image_grid, save_grid, save_preview_grid, upscale_factor
from genlab.sample import sample_captions, save_samples


def _rows(count=3, size=16):
    return [torch.linspace(-1, 1, count * 3 * size * size).view(count, 3, size, size) for _ in range(3)]


def test_small_images_are_upscaled_and_titles_take_room():
    assert upscale_factor(16) == 8 and upscale_factor(28) == 5 and upscale_factor(256) == 1
    plain = image_grid(_rows())
    picture = captioned_grid(_rows(), title="step 100", row_titles=["input", "output", "target"])
    assert picture.width > plain.shape[2] * 8 and picture.height > plain.shape[1] * 8  # upscaled, plus margins
    untitled = captioned_grid(_rows())
    assert picture.width > untitled.width and picture.height > untitled.height
    array = np.asarray(picture)
    assert (array[:20, :100] < 128).any()  # the title is drawn in the top-left corner


def test_preview_grid_with_a_facades_legend(tmp_path):
    legend = label_map_legend(facades_spec("facades-synth", 16))
    assert legend[0] == ("background", (0, 0, 170)) and len(legend) == 12
    assert label_map_legend(TaskSpec("x", "paired", 16, 3, 3)) is None
    titles = ("input", "output", "target")
    save_preview_grid(_rows(), titles, tmp_path / "with.png", "step 3", legend=legend)
    save_preview_grid(_rows(), ("input", "output", "target"), tmp_path / "without.png", "step 3")
    with_legend, without = Image.open(tmp_path / "with.png"), Image.open(tmp_path / "without.png")
    assert with_legend.height > without.height
    colours = {tuple(pixel) for pixel in np.asarray(with_legend.convert("RGB"))[without.height :].reshape(-1, 3)}
    assert (170, 0, 0) in colours and (0, 0, 170) in colours  # the swatches


def test_sample_captions_pick_rows_columns_or_cells():
    names = ("zero", "one", "two")
    assert sample_captions(torch.tensor([0, 1, 2, 0, 1, 2]), names, 3, 2) == {"column_titles": ["zero", "one", "two"]}
    assert sample_captions(torch.tensor([0, 0, 2, 2]), names, 2, 2) == {"row_titles": ["zero", "two"]}
    assert sample_captions(torch.tensor([0, 1, 1, 0]), names, 2, 2) == {"captions": [["zero", "one"], ["one", "zero"]]}
    assert sample_captions(None, names, 2, 2) == {}


def test_save_samples_writes_a_captioned_grid(tmp_path):
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    plain = tmp_path / "plain.png"
    save_grid([images[:3], images[3:]], plain, scale=5)
    (grid,) = save_samples(images, Path(tmp_path / "grid.png"), 3, torch.tensor([0, 1, 2] * 2), ("a", "b", "c"), "t")
    assert Image.open(grid).height > Image.open(plain).height  # the title and column titles
    written = save_samples(images, tmp_path / "folder", 3)
    assert len(written) == 7 and written[-1] == tmp_path / "folder-grid.png"
