"""End-to-end CLI runs on tiny settings, and the bad-input contract: one clear line, exit code 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genlab import __version__
from genlab.cli import main
from genlab.results import EvalResult
from genlab.utils import GenlabError


def run_cli(capsys, *args):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "pix2pix", "--task", "facades-synth", "--size", "16", "--steps", "3", "--batch-size", "2",
                 "--out", str(run), "--set", "net.width=4", "--quiet"])
    assert code == 0
    return run


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    for command in (["data", "list"], ["data", "show"], ["data", "export"], ["train"], ["sample"], ["translate"],
                    ["evaluate"], ["score"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: genlab" in capsys.readouterr().out


def test_data_list_show_and_export(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["facades-synth"].split()[1:4] == ["paired", "any", "yes"]
    assert "fashion-mnist" in rows and "facades" in rows and "folder:PATH" in rows
    code, out, _ = run_cli(capsys, "data", "show", "facades-synth", "--out", tmp_path / "grid.png", "--count", "3",
                           "--size", "32")
    assert code == 0 and Image.open(tmp_path / "grid.png").size[0] > 3 * 32
    assert "training jitter: resize to 38 px, random 32 px crop, horizontal flips\n" in out
    code, _, _ = run_cli(capsys, "data", "export", "facades-synth", "--out", tmp_path / "export", "--size", "16")
    assert code == 0
    exported = sorted((tmp_path / "export" / "test").iterdir())
    assert len(exported) == 100 and Image.open(exported[0]).size == (32, 16)  # A|B side by side
    from genlab.config import DataConfig
    from genlab.data.tasks import get_task

    original = get_task(DataConfig(task="facades-synth", image_size=16)).split("test")
    reloaded = get_task(DataConfig(task=f"folder:{tmp_path / 'export'}", image_size=16)).split("test")
    assert torch.equal(reloaded.fields["source"], original.fields["source"])
    assert torch.equal(reloaded.fields["target"], original.fields["target"])


def test_train_resume_evaluate_translate(capsys, trained_run, tmp_path):
    assert (trained_run / "config.yaml").is_file() and (trained_run / "checkpoints" / "last.pt").is_file()
    code, _, _ = run_cli(capsys, "train", "--resume", "--out", trained_run, "--steps", "5", "--quiet")
    assert code == 0
    code, out, _ = run_cli(capsys, "evaluate", trained_run, "--features", "none", "--no-lpips", "--limit", "5",
                           "--json")
    assert code == 0
    results = EvalResult.from_dict(json.loads(out))
    assert results.step == 5 and results.count == 5 and results.score("psnr").count == 5
    assert EvalResult.load(trained_run / "eval.json") == results
    assert (trained_run / "eval" / "test-step0000005.json").is_file()
    code, out, _ = run_cli(capsys, "evaluate", trained_run, "--features", "none", "--no-lpips", "--limit", "5")
    assert code == 0 and "psnr ↑" in out and "ssim ↑" in out
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("RGB", (40, 24), (0, 0, 200)).save(inputs / "a.png")
    Image.new("RGB", (16, 16), (200, 0, 0)).save(inputs / "b.jpg")
    code, out, _ = run_cli(capsys, "translate", trained_run, inputs, "--out", tmp_path / "out")
    assert code == 0 and "wrote 2 images" in out
    assert Image.open(tmp_path / "out" / "a.png").size == (40, 24)  # back at the input's size
    assert Image.open(tmp_path / "out" / "b.jpg").format == "JPEG"


def test_dry_run_prints_the_resolved_config(capsys):
    code, out, _ = run_cli(capsys, "train", "pix2pix", "--preset", "paper", "--set", "net.gan_loss=lsgan",
                           "--dry-run")
    assert code == 0
    assert "gan_loss: lsgan" in out and "image_size: 256" in out and "lambda_l1: 100.0" in out


def test_dry_run_shows_the_task_refinement_and_the_users_batch_over_it(capsys):
    code, out, _ = run_cli(capsys, "train", "pix2pix", "--task", "edges2fashion", "--dry-run")
    assert code == 0 and "image_size: 32" in out and "batch_size: 32" in out
    code, out, _ = run_cli(capsys, "train", "pix2pix", "--task", "edges2fashion", "--batch-size", "8", "--dry-run")
    assert code == 0 and "image_size: 32" in out and "batch_size: 8" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "pix3pix", "--dry-run"], "unknown model 'pix3pix' (valid: "),
        (["train", "pix2pix", "--task", "nope", "--steps", "1"], "unknown task 'nope' (valid: facades-synth"),
        (["train", "pix2pix", "--preset", "huge", "--dry-run"], "unknown preset 'huge'"),
        (["train", "pix2pix", "--set", "net.widht=3", "--dry-run"], "unknown key 'net.widht'"),
        (["train", "pix2pix", "--set", "train.steps=lots", "--dry-run"], "train.steps: expected an integer"),
        (["train", "ddpm", "--task", "facades-synth", "--steps", "1"], "does not support paired tasks"),
        (["evaluate", "{tmp}"], "not a genlab run directory"),
        (["evaluate", "{tmp}/missing"], "no such run directory"),
        (["train", "--resume", "--out", "{tmp}"], "not a genlab run directory"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, *[arg.replace("{tmp}", str(tmp_path)) for arg in args])
    assert code == 2
    assert err.startswith("genlab: error: ") and message in err and err.count("\n") == 1


def test_translate_bad_inputs_name_the_file(capsys, trained_run, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run_cli(capsys, "translate", trained_run, broken, "--out", tmp_path / "out")
    assert code == 2 and "broken.png" in err
    code, _, err = run_cli(capsys, "translate", trained_run, tmp_path / "nothing.png", "--out", tmp_path / "out")
    assert code == 2 and "nothing.png: no such file" in err
    assert not (tmp_path / "out").exists()


def test_temperature_is_for_vaes_only(capsys, trained_run, tmp_path):
    code, _, err = run_cli(capsys, "translate", trained_run, tmp_path, "--out", tmp_path / "o", "--temperature", "0.5")
    assert code == 2 and "--temperature: model 'pix2pix' draws no latent code from a prior" in err
    vae = tmp_path / "vae"
    assert main(["train", "vae", "--task", "fashion-mnist", "--size", "16", "--steps", "1", "--batch-size", "2",
                 "--out", str(vae), "--set", "net.width=4", "--set", "data.train_limit=8", "--quiet"]) == 0
    code, _, err = run_cli(capsys, "sample", vae, "--count", "2", "--out", tmp_path / "s", "--temperature", "-1")
    assert code == 2 and "--temperature must be 0 or more" in err
    code, out, _ = run_cli(capsys, "sample", vae, "--count", "2", "--out", tmp_path / "s", "--temperature", "0")
    assert code == 0
    first, second = (Image.open(path).tobytes() for path in sorted((tmp_path / "s").glob("*.png")))
    assert first == second  # z = 0 for both: one image twice


def test_guidance_interval_flag_is_parsed_checked_and_refused_without_a_sampler(capsys, trained_run, tmp_path):
    for bad, message in (("5", "expected LOW,HIGH (two numbers)"), ("5,0.3", "need 0 <= low < high")):
        with pytest.raises(SystemExit):
            main(["sample", str(trained_run), "--out", str(tmp_path / "s.png"), "--guidance-interval", bad])
        assert message in capsys.readouterr().err
    code, _, err = run_cli(
        capsys, "translate", trained_run, tmp_path, "--out", tmp_path / "o", "--guidance-interval", "0.3,5"
    )
    assert code == 2 and "--guidance-interval: model 'pix2pix' has no diffusion sampler" in err


def test_autoguidance_flag_translates_with_the_guide_and_names_the_evaluation(capsys, trained_run, tmp_path):
    run = tmp_path / "cddim"
    # the guide is the average after the second of 3 steps, so the final average differs from it
    code = main(["train", "cddim", "--task", "facades-synth", "--size", "16", "--steps", "3", "--batch-size", "2",
                 "--out", str(run), "--quiet", "--set", "net.base_width=8", "--set", "net.channel_mults=[1,2]",
                 "--set", "net.timesteps=20", "--set", "net.autoguide_at=0.3"])
    assert code == 0
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(2):
        image = torch.randint(0, 256, (16, 16, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(image).save(inputs / f"{index}.png")
    outputs = {}
    for weight in ("1", "3"):
        out = tmp_path / f"w{weight}"
        code, _, err = run_cli(capsys, "translate", run, inputs, "--out", out, "--steps", "3", "--autoguidance", weight)
        assert code == 0, err
        outputs[weight] = [np.asarray(Image.open(path)) for path in sorted(out.glob("*.png"))]
    assert len(outputs["1"]) == 2 and any((a != b).any() for a, b in zip(outputs["1"], outputs["3"]))
    code, _, err = run_cli(capsys, "evaluate", run, "--limit", "2", "--steps", "2", "--autoguidance", "2",
                           "--features", "none", "--no-lpips")
    assert code == 0, err
    assert (run / "eval" / "test-step0000003-ddim2-eta1-ag2.json").is_file()
    code, _, err = run_cli(capsys, "translate", trained_run, tmp_path, "--out", tmp_path / "o", "--autoguidance", "2")
    assert code == 2 and "--autoguidance: model 'pix2pix' has no diffusion sampler" in err


def test_existing_run_is_refused_and_kept(capsys, trained_run):
    before = (trained_run / "checkpoints" / "last.pt").read_bytes()
    code, _, err = run_cli(capsys, "train", "pix2pix", "--out", trained_run, "--steps", "1")
    assert code == 2 and "already holds a run" in err
    assert (trained_run / "checkpoints" / "last.pt").read_bytes() == before


def test_score_folders(capsys, tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(6):
        image = torch.randint(0, 256, (16, 16, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(image).save(ref / f"{index}.png")
        Image.fromarray(255 - image).save(pred / f"{index}.png")
    code, out, _ = run_cli(capsys, "score", pred, ref, "--metrics", "psnr,ssim,fid", "--json")
    assert code == 0
    scores = {item["metric"]: item for item in json.loads(out)}
    assert scores["psnr"]["count"] == 6 and scores["ssim"]["count"] == 6
    assert "skipped" in scores["inception.fid"]  # offline, no weights: said, not silently dropped
    other = tmp_path / "other"
    other.mkdir()
    Image.new("RGB", (16, 16)).save(other / "x.png")
    code, _, err = run_cli(capsys, "score", other, ref, "--metrics", "psnr")
    assert code == 2 and "share no file names" in err
    Image.new("RGB", (8, 8)).save(other / "0.png")
    code, _, err = run_cli(capsys, "score", other, ref, "--metrics", "psnr")
    assert code == 2 and "0.png: shape" in err
    code, _, err = run_cli(capsys, "score", pred, ref, "--metrics", "psnr,bogus")
    assert code == 2 and "unknown metric 'bogus'" in err


def test_translate_and_sample_precision(capsys, trained_run, tmp_path):
    """--precision bf16 runs the forward passes in bf16 (CPUs too) and writes the same files, near fp32's; fp16
    needs CUDA: one clear line, exit 2, nothing written."""
    import genlab
    from genlab.api import load_run

    assert load_run(trained_run, device="cpu").model.runtime.autocast_dtype is None  # fp32 unless asked
    assert load_run(trained_run, device="cpu", precision="bf16").model.runtime.autocast_dtype == torch.bfloat16
    assert genlab.load(trained_run, device="cpu", precision="bf16").runtime.autocast_dtype == torch.bfloat16
    with pytest.raises(GenlabError, match=r"precision='fp8' is not a precision \(valid: auto, fp32, fp16, bf16\)"):
        load_run(trained_run, device="cpu", precision="fp8")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.effect_noise((16, 16), 60).convert("RGB").save(inputs / "a.png")
    outputs = {}
    for precision in ("fp32", "bf16"):
        code, _, _ = run_cli(capsys, "translate", trained_run, inputs, "--out", tmp_path / precision,
                             "--precision", precision)
        assert code == 0
        outputs[precision] = torch.tensor(np.array(Image.open(tmp_path / precision / "a.png")), dtype=torch.float32)
    gap = (outputs["bf16"] - outputs["fp32"]).abs()
    assert 0 < float(gap.max()) and float(gap.mean()) < 4.0  # bf16 really ran, and stays within a few levels
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "translate", trained_run, inputs, "--out", tmp_path / "fp16",
                               "--precision", "fp16")
        assert code == 2 and "precision=fp16 needs a CUDA device" in err
        assert not (tmp_path / "fp16").exists()
        code, _, err = run_cli(capsys, "sample", trained_run, "--out", tmp_path / "s.png", "--precision", "fp16")
        assert code == 2 and "precision=fp16 needs a CUDA device" in err
