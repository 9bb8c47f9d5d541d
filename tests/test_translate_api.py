"""One translation behaviour for `model.translate` and `genlab translate`: sizes, alpha, ranges, A|B pairs,
families that do not translate, diffusers-style arguments; plus file permissions and task-name checks."""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from genlab import checkpoint as ckpt
from genlab.cli import main
from genlab.config import DataConfig
from genlab.data.tasks import TaskSpec, check_task_name
from genlab.models import get_model_class
from genlab.runs import build_run_config
from genlab.sample import generate
from genlab.translate import translate_files
from genlab.utils import GenlabError, atomic_write_text

PAIRED = TaskSpec("toy", "paired", 16, 3, 3)
LABELLED = TaskSpec("toy-labelled", "labelled", 16, 1, 1, num_classes=2, class_names=("zero", "one"))


@pytest.fixture(scope="module")
def pix2pix():
    torch.manual_seed(0)
    config = build_run_config("pix2pix", "quick", {}, ["net.width=4"])
    return get_model_class("pix2pix").build(config.net, PAIRED).eval()


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    config = build_run_config("vae", "quick", {}, [])
    return get_model_class("vae").build(config.net, LABELLED).eval()


def _picture(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels if len(mode) > 1 else pixels[:, :, 0], mode=mode)


# --- 5: one behaviour for the API and the CLI -------------------------------------------------------------
def test_api_returns_the_input_size_and_matches_translate_files(pix2pix, tmp_path):
    picture = _picture(40, 24)
    output = pix2pix.translate(picture)
    assert isinstance(output, Image.Image) and output.size == (40, 24)  # the input's size, not the model's 16
    picture.save(tmp_path / "in.png")
    (written,) = translate_files(pix2pix, [str(tmp_path / "in.png")], tmp_path / "out")
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(output))
    batch = pix2pix.translate(torch.rand(2, 3, 24, 40) * 2 - 1)
    assert batch.shape == (2, 3, 24, 40)
    mixed = pix2pix.translate([_picture(20, 20), _picture(30, 12)])
    assert [image.size for image in mixed] == [(20, 20), (30, 12)]


def test_api_and_cli_both_refuse_alpha(pix2pix, tmp_path):
    rgba = _picture(16, 16, "RGBA")
    with pytest.raises(GenlabError, match="alpha"):
        pix2pix.translate(rgba)
    rgba.save(tmp_path / "alpha.png")
    with pytest.raises(GenlabError, match="alpha.png.*alpha"):
        translate_files(pix2pix, [str(tmp_path / "alpha.png")], tmp_path / "out")
    with pytest.raises(GenlabError, match="alpha"):
        pix2pix.translate(torch.zeros(4, 16, 16, dtype=torch.uint8))


# --- 6: input range -------------------------------------------------------------------------------------
def test_unit_range_input_warns_once_and_input_range_reads_it(pix2pix):
    images = torch.rand(3, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pix2pix.translate(images)
    assert len([w for w in caught if "input_range" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_unit = pix2pix.translate(images, input_range="[0,1]")
    expected = (pix2pix.translate_batch(images * 2 - 1) + 1) / 2
    assert torch.allclose(as_unit, expected.clamp(0, 1), atol=1e-5)  # read as [0, 1], returned in [0, 1]
    with pytest.raises(GenlabError, match="input_range"):
        pix2pix.translate(images, input_range="0-1")


# --- 1: aligned A|B pairs -------------------------------------------------------------------------------
def test_pairs_without_aligned_are_refused_and_aligned_needs_pairs(pix2pix, tmp_path):
    folder = tmp_path / "ab"
    folder.mkdir()
    for index in range(2):
        _picture(32, 16, seed=index).save(folder / f"pair_{index}.png")
    with pytest.raises(GenlabError, match="--aligned"):
        translate_files(pix2pix, [str(folder)], tmp_path / "out")
    written = translate_files(pix2pix, [str(folder)], tmp_path / "out", aligned=True)
    assert [Image.open(path).size for path in written] == [(16, 16), (16, 16)]  # the left half's size
    _picture(16, 16).save(tmp_path / "square.png")
    with pytest.raises(GenlabError, match="square.png: 16x16 is not an aligned"):
        translate_files(pix2pix, [str(tmp_path / "square.png")], tmp_path / "out", aligned=True)
    translate_files(pix2pix, [str(tmp_path / "square.png"), str(folder)], tmp_path / "mixed")  # not all 2:1


# --- 7: families that do not translate -------------------------------------------------------------------
def test_a_generation_run_says_it_does_not_translate(vae, tmp_path, capsys):
    with pytest.raises(GenlabError, match="cannot translate images .*use sample"):
        vae.translate(torch.zeros(1, 1, 16, 16))
    with pytest.raises(GenlabError, match="cannot translate"):
        translate_files(vae, [str(tmp_path / "missing.png")], tmp_path / "out")  # before looking at the files
    run = tmp_path / "run"
    config = build_run_config("vae", "quick", {}, [])
    ckpt.save_checkpoint(run / "checkpoints" / "last.pt", {
        "model": "vae", "config": config.to_dict(), "spec": dataclasses.asdict(LABELLED),
        "state": vae.training_state(), "step": 0,
    })
    config.save(run / "config.yaml")
    assert main(["translate", str(run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "out")]) == 2
    assert "cannot translate images" in capsys.readouterr().err


# --- diffusers-style names ------------------------------------------------------------------------------
def test_output_types_and_sampler_names(pix2pix, vae):
    cvae = get_model_class("cvae").build(build_run_config("cvae", "quick", {}, []).net, LABELLED).eval()
    picture = _picture(16, 16)
    assert isinstance(pix2pix.translate(torch.zeros(3, 16, 16, dtype=torch.uint8), output_type="pil"), Image.Image)
    array = pix2pix.translate(picture, output_type="np")
    assert array.shape == (16, 16, 3) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1
    assert pix2pix.translate([picture, picture], output_type="pt").shape == (2, 3, 16, 16)
    with pytest.raises(GenlabError, match="num_inference_steps|steps.*no diffusion sampler"):
        pix2pix.translate(picture, num_inference_steps=10)
    images = generate(cvae, 4, labels=[0, 1, 0, 1], output_type="pil", generator=3)
    assert len(images) == 4 and images[0].size == (16, 16)
    again = generate(cvae, 4, labels=[0, 1, 0, 1], output_type="pt", generator=3, batch_size=3)
    assert torch.equal(torch.from_numpy(np.array(images[1]))[None], ((again[1] + 1) * 127.5).round().byte())
    assert generate(vae, 2, output_type="np").shape == (2, 16, 16, 1)
    with pytest.raises(GenlabError, match="no diffusion sampler"):
        generate(vae, 2, guidance_scale=3.0)


# --- 9: permissions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_umask_permissions(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "file.txt", "hello")
    finally:
        os.umask(previous)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == mode
    assert os.umask(previous) == previous  # the umask was restored
    os.umask(previous)


# --- 10: task names -------------------------------------------------------------------------------------
def test_check_task_name(tmp_path):
    assert check_task_name("facades-synth") == "facades-synth"
    assert check_task_name(f"folder:{tmp_path}") == f"folder:{tmp_path}"
    with pytest.raises(GenlabError, match="unknown task 'facades-sinth' \\(valid: facades-synth"):
        check_task_name("facades-sinth")
    with pytest.raises(GenlabError, match="not a folder"):
        check_task_name(f"folder:{tmp_path / 'nothing'}")


# --- data options ---------------------------------------------------------------------------------------
def test_load_size_follows_the_image_size_and_small_crops_warn():
    assert DataConfig(image_size=256).resolved_load_size() == 300
    assert DataConfig(image_size=64).resolved_load_size() == 75
    assert DataConfig(image_size=64, load_scale=286 / 256).resolved_load_size() == 72
    from genlab.data.tasks import get_task

    with pytest.warns(UserWarning, match="less than half of data.load_size"):
        get_task(DataConfig(task="facades-synth", image_size=16, load_size=64))


def test_direction_swaps_folder_pairs(tmp_path):
    from genlab.data.tasks import get_task

    (tmp_path / "train").mkdir()
    left = np.zeros((16, 16, 3), np.uint8)
    right = np.full((16, 16, 3), 255, np.uint8)
    for index in range(3):
        Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / "train" / f"{index}.png")
    forward = get_task(DataConfig(task=f"folder:{tmp_path}", image_size=16)).split("train")
    backward = get_task(DataConfig(task=f"folder:{tmp_path}", image_size=16, direction="BtoA")).split("train")
    assert forward.fields["source"].max() == 0 and forward.fields["target"].min() == 255
    assert torch.equal(backward.fields["source"], forward.fields["target"])
    assert torch.equal(backward.fields["target"], forward.fields["source"])
