import pytest

from genlab.config import DataConfig, apply_override, dataclass_from_dict
from genlab.runs import build_run_config, load_run_config
from genlab.utils import GenlabError


def test_presets_resolve_in_order():
    config = build_run_config("pix2pix", "quick", {"train.steps": 7}, ["net.lambda_l1=50", "seed=3"])
    assert config.data.image_size == 64  # from the quick preset
    assert config.train.steps == 7  # option beats preset
    assert config.net.lambda_l1 == 50.0 and isinstance(config.net.lambda_l1, float)  # --set, int -> float
    assert config.seed == 3
    paper = build_run_config("pix2pix", "paper")
    assert (paper.data.image_size, paper.train.batch_size, paper.net.lambda_l1) == (256, 1, 100.0)
    assert (paper.net.lr, paper.net.beta1, paper.net.beta2) == (2e-4, 0.5, 0.999)


def test_a_preset_refines_itself_for_the_task_under_explicit_options(monkeypatch):
    from genlab.models import get_model_class

    cvae = get_model_class("cvae")
    refinements = {"quick": {"fashion-mnist": {"data.image_size": 32, "train.batch_size": 64, "net.beta": 3.0}}}
    monkeypatch.setattr(cvae, "task_presets", refinements)
    facades = build_run_config("cvae", "quick")
    assert facades.data.task == "facades-synth" and facades.data.image_size == 64  # the preset's own task
    fashion = build_run_config("cvae", "quick", {"data.task": "fashion-mnist"})
    assert (fashion.data.image_size, fashion.train.batch_size, fashion.net.beta) == (32, 64, 3.0)
    # what the user gives wins over the refinement, whether an option or a --set
    mine = build_run_config("cvae", "quick", {"data.task": "fashion-mnist", "data.image_size": 16}, ["net.beta=1"])
    assert (mine.data.image_size, mine.train.batch_size, mine.net.beta) == (16, 64, 1.0)
    by_set = build_run_config("cvae", "quick", {}, ["data.task=fashion-mnist"])
    assert by_set.data.image_size == 32
    assert build_run_config("cvae", "paper", {"data.task": "fashion-mnist"}).train.batch_size == 100  # quick only


def test_cddim_quick_trains_32_px_pairs_at_the_garment_settings_and_64_px_facades_as_before():
    garments = build_run_config("cddim", "quick", {"data.task": "edges2fashion"})
    assert (garments.data.image_size, garments.train.batch_size, garments.net.lr) == (32, 32, 1e-3)
    assert (garments.net.autoguide_at, garments.net.log_sigma_normal, garments.net.autoguidance) == (0.5, (0.5, 1.0), 2)
    assert garments.net.value_prior
    facades = build_run_config("cddim", "quick")
    assert (facades.data.image_size, facades.train.batch_size, facades.net.lr) == (64, 8, 1e-3)
    assert (facades.net.autoguide_at, facades.net.log_sigma_normal, facades.net.autoguidance) == (0.25, None, 2)
    assert not facades.net.value_prior and not build_run_config("ddpm", "quick").net.value_prior
    mine = build_run_config("cddim", "quick", {"data.task": "edges2fashion", "train.batch_size": 8})
    assert (mine.train.batch_size, mine.net.autoguide_at) == (8, 0.5)  # only what the user gave is theirs
    # The garment settings follow the size, whatever the task: a folder of 32 px pairs gets them all.
    folder = build_run_config("cddim", "quick", {"data.task": "folder:/data/edges", "data.image_size": 32})
    garment_settings = (garments.train.batch_size, garments.net.autoguide_at, garments.net.log_sigma_normal,
                        garments.net.autoguidance, garments.net.value_prior)
    assert (folder.train.batch_size, folder.net.autoguide_at, folder.net.log_sigma_normal,
            folder.net.autoguidance, folder.net.value_prior) == garment_settings
    wider = build_run_config("cddim", "quick", {"data.task": "folder:/data/edges", "data.image_size": 48})
    assert (wider.train.batch_size, wider.net.log_sigma_normal, wider.net.value_prior) == (8, None, False)
    plain = build_run_config("cddim", "quick", {"data.image_size": 32}, ["net.value_prior=false"])
    assert (plain.net.value_prior, plain.net.log_sigma_normal) == (False, (0.5, 1.0))  # a --set wins


def test_pix2pix_quick_trains_32_px_images_at_batch_32_and_64_px_at_batch_4():
    garments = build_run_config("pix2pix", "quick", {"data.task": "edges2fashion"})  # the task's size: 32 px
    assert (garments.data.image_size, garments.train.batch_size, garments.net.lr) == (32, 32, 2e-3)
    facades = build_run_config("pix2pix", "quick")
    assert (facades.data.image_size, facades.train.batch_size) == (64, 4)
    # the batch follows the size, whatever the task: a folder of 32 px garments, or facades made small
    folder = build_run_config("pix2pix", "quick", {"data.task": "folder:/data/edges", "data.image_size": 32})
    assert folder.train.batch_size == 32
    assert build_run_config("pix2pix", "quick", {"data.image_size": 16}).train.batch_size == 32
    assert build_run_config("pix2pix", "quick", {"data.image_size": 48}).train.batch_size == 4
    mine = build_run_config("pix2pix", "quick", {"data.task": "edges2fashion", "train.batch_size": 4})
    assert (mine.data.image_size, mine.train.batch_size) == (32, 4)  # what the user gave is theirs
    by_set = build_run_config("pix2pix", "quick", {"data.task": "edges2fashion"}, ["train.batch_size=4"])
    assert by_set.train.batch_size == 4
    by_size = build_run_config("pix2pix", "quick", {}, ["data.image_size=32"])
    assert by_size.train.batch_size == 32
    assert build_run_config("pix2pix", "paper", {"data.image_size": 32}).train.batch_size == 1  # quick only


def test_size_refinements_pick_the_tightest_bound_and_yield_to_the_tasks(monkeypatch):
    from genlab.models import get_model_class
    from genlab.runs import size_settings

    by_size = {64: {"train.batch_size": 8}, 32: {"train.batch_size": 32, "net.lr": 1e-3}}
    assert size_settings(by_size, 16) == by_size[32] and size_settings(by_size, 32) == by_size[32]
    assert size_settings(by_size, 33) == by_size[64] and size_settings(by_size, 65) == {}
    cvae = get_model_class("cvae")
    monkeypatch.setattr(cvae, "size_presets", {"quick": by_size})
    monkeypatch.setattr(cvae, "task_presets", {"quick": {"fashion-mnist": {"data.image_size": 32, "net.lr": 5e-4}}})
    fashion = build_run_config("cvae", "quick", {"data.task": "fashion-mnist"})
    assert (fashion.train.batch_size, fashion.net.lr) == (32, 5e-4)  # the size's batch, the task's lr
    small = build_run_config("cvae", "quick", {"data.image_size": 48})
    assert small.train.batch_size == 8 and small.net.lr == build_run_config("cvae", "quick").net.lr


def test_yaml_round_trip(tmp_path):
    config = build_run_config("pix2pix", "seed", {}, ["net.gan_loss=lsgan", "data.flip=false"])
    config.save(tmp_path / "config.yaml")
    loaded = load_run_config(tmp_path / "config.yaml")
    assert loaded == config
    assert loaded.net.gan_loss == "lsgan" and loaded.data.flip is False


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("net.nonsense=1", "unknown key 'net.nonsense'"),
        ("bogus.key=1", "unknown key 'bogus.key'"),
        ("train.steps=many", "train.steps: expected an integer"),
        ("net.gan_loss=wgan", "'wgan' is not one of vanilla, lsgan, hinge"),
        ("data.flip=3", "expected true or false"),
        ("train.steps", "expected key=value"),
    ],
)
def test_override_errors_name_the_key(assignment, fragment):
    config = build_run_config("pix2pix")
    with pytest.raises(GenlabError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        apply_override(config, assignment)


def test_unknown_key_lists_valid_keys():
    config = build_run_config("pix2pix")
    with pytest.raises(GenlabError) as error:
        apply_override(config, "net.lamda_l1=10")
    assert "net.lambda_l1" in str(error.value)


def test_unknown_model_and_preset_list_choices():
    with pytest.raises(GenlabError, match="valid: .*pix2pix"):
        build_run_config("pix3pix")
    with pytest.raises(GenlabError, match="valid: paper, seed, quick"):
        build_run_config("pix2pix", "fast")


def test_optional_fields_accept_none_and_values():
    config = dataclass_from_dict(DataConfig, {"load_size": None, "train_limit": 5}, "data")
    assert config.load_size is None and config.train_limit == 5
    assert config.resolved_load_size() == 75  # 64 * 300 / 256, the seed's 256 -> 300 jitter ratio


def test_bad_yaml_file_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: pix2pix\nnet: {width: [\n")
    with pytest.raises(GenlabError, match="config.yaml"):
        load_run_config(path)
    path.write_text("model: pix2pix\ntrain: {stepz: 3}\n")
    with pytest.raises(GenlabError, match="unknown key 'stepz'"):
        load_run_config(path)


def test_exponent_floats_without_a_dot_are_numbers():
    config = build_run_config("pix2pix")
    apply_override(config, "net.lr=3e-3")
    assert config.net.lr == 0.003
    with pytest.raises(GenlabError, match="net.lr: expected a number, got 'fast'"):
        apply_override(config, "net.lr=fast")
