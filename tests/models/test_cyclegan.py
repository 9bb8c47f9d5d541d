import io

import pytest
import torch

from genlab import checkpoint as ckpt
from genlab.config import DataConfig
from genlab.data.tasks import TaskSpec, get_task
from genlab.models import get_model_class
from genlab.models.cyclegan import CycleGAN, CycleGANConfig, lr_factor
from genlab.models.image_pool import ImagePool
from genlab.utils import GenlabError

LOSSES = {
    "loss_g", "loss_g_gan_ab", "loss_g_gan_ba", "loss_cycle_a", "loss_cycle_b", "loss_idt_a", "loss_idt_b",
    "loss_d_a", "loss_d_b",
}  # fmt: skip


def _model(channels=(3, 3), size=16, kind="unpaired", seed=0, **net) -> CycleGAN:
    torch.manual_seed(seed)
    config = CycleGANConfig(**{"width": 4, "n_blocks": 1, **net})
    return get_model_class("cyclegan").build(config, TaskSpec("t", kind, size, *channels))


def _images(count, channels=3, size=16, seed=0):
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _snapshot(module):
    return [parameter.detach().clone() for parameter in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# --- the image pool ------------------------------------------------------------------------------------------
def test_pool_returns_its_input_while_filling():
    pool = ImagePool(5, seed=0)
    first, second = _images(3, seed=1), _images(2, seed=2)
    assert torch.equal(pool.query(first), first)
    assert torch.equal(pool.query(second), second)  # exactly fills the pool: still the input
    assert len(pool) == 5 and torch.equal(torch.stack(pool.images), torch.cat([first, second]))


def test_full_pool_swaps_in_a_stored_image_half_of_the_time():
    pool = ImagePool(10, seed=123)
    tag = lambda value: torch.full((1, 1, 2, 2), float(value))  # noqa: E731
    for value in range(10):
        pool.query(tag(value))
    shown = set(range(10))
    swapped, draws = 0, 4000
    for value in range(100, 100 + draws):
        returned = float(pool.query(tag(value))[0, 0, 0, 0])
        if returned != value:
            swapped += 1
            assert returned in shown  # an image the pool stored earlier
        shown.add(value)
        assert len(pool) == 10
    assert 0.45 <= swapped / draws <= 0.55


def test_pool_state_round_trip_continues_identically():
    pool = ImagePool(4, seed=7)
    for index in range(6):
        pool.query(_images(2, seed=index))
    copy = ImagePool(4, seed=99)
    copy.load_state_dict(torch.load(_saved(pool.state_dict()), weights_only=True))
    for index in range(6, 12):
        assert torch.equal(pool.query(_images(2, seed=index)), copy.query(_images(2, seed=index)))


def test_pool_of_size_zero_is_off():
    pool = ImagePool(0, seed=0)
    images = _images(3)
    assert torch.equal(pool.query(images), images) and len(pool) == 0


def _saved(state) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# --- losses and the two sub-steps ----------------------------------------------------------------------------
def test_cycle_and_identity_losses_vanish_for_identity_generators():
    model = _model()
    model.generator_ab, model.generator_ba = torch.nn.Identity(), torch.nn.Identity()
    losses, fake_a, fake_b = model.generator_losses(_images(2, seed=1), _images(2, seed=2))
    for name in ("loss_cycle_a", "loss_cycle_b", "loss_idt_a", "loss_idt_b"):
        assert losses[name] == 0, name
    assert losses["loss_g"] == pytest.approx(float(losses["loss_g_gan_ab"] + losses["loss_g_gan_ba"]))


def test_generator_step_moves_only_generators_and_discriminator_step_only_discriminators():
    model = _model()
    real_a, real_b = _images(2, seed=1), _images(2, seed=2)
    generators = (model.generator_ab, model.generator_ba)
    discriminators = (model.discriminator_a, model.discriminator_b)
    before_g, before_d = [_snapshot(m) for m in generators], [_snapshot(m) for m in discriminators]
    losses, fake_a, fake_b = model.generator_step(real_a, real_b)
    assert all(_changed(before, m) for before, m in zip(before_g, generators))
    assert not any(_changed(before, m) for before, m in zip(before_d, discriminators))
    assert all(p.requires_grad for m in discriminators for p in m.parameters())  # unfrozen after the G step
    assert not fake_a.requires_grad and not fake_b.requires_grad
    after_g = [_snapshot(m) for m in generators]
    model.discriminator_step(real_a, real_b, fake_a, fake_b)
    assert not any(_changed(before, m) for before, m in zip(after_g, generators))
    assert all(_changed(before, m) for before, m in zip(before_d, discriminators))


@pytest.mark.parametrize("keys", [("a", "b"), ("source", "target")])
def test_training_step_returns_every_loss_finite(keys):
    model = _model(kind="paired" if keys[0] == "source" else "unpaired")
    losses = model.training_step({keys[0]: _images(2, seed=1), keys[1]: _images(2, seed=2)})
    assert set(losses) == LOSSES
    assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())
    cycle, identity = losses["loss_cycle_a"] + losses["loss_cycle_b"], losses["loss_idt_a"] + losses["loss_idt_b"]
    expected = losses["loss_g_gan_ab"] + losses["loss_g_gan_ba"] + 10 * cycle + 5 * identity
    assert losses["loss_g"] == pytest.approx(expected, rel=1e-5)
    assert len(model.pools["a"]) == 2 and len(model.pools["b"]) == 2


def test_identity_loss_is_skipped_with_a_warning_when_channels_differ():
    with pytest.warns(UserWarning, match="identity loss is skipped"):
        model = _model(channels=(1, 3))
    losses = model.training_step({"a": _images(2, channels=1), "b": _images(2, channels=3)})
    assert losses["loss_idt_a"] == 0 and losses["loss_idt_b"] == 0


def test_refuses_labelled_tasks_and_bad_batches():
    with pytest.raises(GenlabError, match="does not support labelled tasks"):
        _model(kind="labelled")
    with pytest.raises(GenlabError, match="a/b or source/target"):
        _model().training_step({"image": _images(1)})
    with pytest.raises(GenlabError, match="net.decay_start"):
        _model(decay_start=1.5)


# --- the LR schedule --------------------------------------------------------------------------------------------
def test_lr_factor_is_constant_then_falls_linearly_to_zero():
    total = 100
    assert [lr_factor(step, total, 0.5) for step in (0, 25, 49, 50)] == [1.0, 1.0, 1.0, 1.0]
    assert [lr_factor(step, total, 0.5) for step in (60, 75, 90, 100)] == pytest.approx([0.8, 0.5, 0.2, 0.0])
    assert lr_factor(10**6, total, 0.5) == 0.0
    assert lr_factor(123, None, 0.5) == 1.0  # no budget given: constant LR


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # no optimiser steps here
def test_schedulers_follow_the_lr_factor_as_the_trainer_steps():
    model = _model(total_steps=10, decay_start=0.4)
    learning_rates = []
    for _ in range(10):
        learning_rates.append([group["lr"] for opt in model.optimizers.values() for group in opt.param_groups])
        model.end_step()
    expected = [2e-4 * lr_factor(step, 10, 0.4) for step in range(10)]
    assert [rates[0] for rates in learning_rates] == pytest.approx(expected)
    assert all(len(set(rates)) == 1 for rates in learning_rates)  # G and D share the schedule
    assert expected[3] == pytest.approx(2e-4) and expected[-1] == pytest.approx(2e-4 / 6)


# --- translation ---------------------------------------------------------------------------------------------
def test_translate_directions_use_their_generator():
    model = _model(channels=(1, 3), lambda_identity=0.0)
    images_b = _images(2, channels=3)
    with torch.no_grad():
        expected = model.generator_ba.eval()(images_b)
    assert torch.equal(model.translate_batch(images_b, direction="BtoA"), expected)
    assert model.translate_batch(_images(2, channels=1)).shape == (2, 3, 16, 16)  # AtoB is the default
    assert model.translate(images_b[0], direction="BtoA").shape == (1, 16, 16)  # single B image -> single A
    assert torch.equal(model.translate_batch(images_b, direction="BtoA"), expected)  # deterministic
    with pytest.raises(GenlabError, match="valid: AtoB, BtoA"):
        model.translate_batch(images_b, direction="sideways")
    with pytest.raises(GenlabError, match="valid: AtoB, BtoA"):
        model.translate(images_b, direction="sideways")
    assert model.can("translate") and model.can("reverse")


def test_generator_averages_follow_the_power_ema_and_translate_both_ways():
    """net.ema_length: each generator's average copies it at the first update, then avg <- d avg + (1 - d) G
    with d = (1 - 1/(n+1))^(gamma+1); both directions translate with their average, the trained nets unchanged."""
    from genlab.nn.ema import power_ema_decay, power_ema_gamma

    assert _model().ema_generator_ab is None and _model().ema_generator_ba is None  # off by default
    model = _model(channels=(1, 3), lambda_identity=0.0, ema_length=0.1)
    names = ("generator_ab", "generator_ba")
    snapshots = []
    for step in range(2):
        model.training_step({"a": _images(2, channels=1, seed=step), "b": _images(2, channels=3, seed=9 + step)})
        model.end_step()
        snapshots.append({name: _snapshot(getattr(model, name)) for name in names})
    decay = power_ema_decay(1, power_ema_gamma(0.1))
    assert 0 < decay < 1
    for name in names:
        for average, first, second in zip(getattr(model, f"ema_{name}").parameters(), *(s[name] for s in snapshots)):
            torch.testing.assert_close(average, decay * first + (1 - decay) * second, rtol=0, atol=1e-6)
    assert set(model.parameter_counts()) == {"generator_ab", "generator_ba", "discriminator_a", "discriminator_b"}
    images = {"AtoB": _images(2, channels=1, seed=5), "BtoA": _images(2, channels=3, seed=6)}
    for direction, name in zip(("AtoB", "BtoA"), names):
        with torch.no_grad():
            averaged = getattr(model, f"ema_{name}")(images[direction])
            last = getattr(model, name).eval()(images[direction])
        getattr(model, name).train()
        assert torch.equal(model.translate_batch(images[direction], direction=direction), averaged)
        assert not torch.equal(averaged, last)
        assert getattr(model, name).training  # translating with the average leaves the trained G's mode alone


def test_preview_rows():
    model = _model(channels=(1, 3), lambda_identity=0.0)
    rows = model.preview({"a": _images(3, channels=1), "b": _images(3, channels=3)})
    assert [tuple(row.shape[:2]) for row in rows.values()] == [(3, 1), (3, 3), (3, 1), (3, 3), (3, 1)]
    assert list(rows) == ["A", "A to B", "back to A", "B", "B to A"]
    paired = _model(kind="paired")
    assert list(paired.preview({"source": _images(2), "target": _images(2)})) == ["input", "output", "target"]


# --- state ---------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    model.training_step({"a": _images(2, seed=1), "b": _images(2, seed=2)})
    model.end_step()
    ckpt.save_checkpoint(tmp_path / "last.pt", {"state": model.training_state()})
    restored = _model(seed=5)
    restored.load_training_state(ckpt.load_checkpoint(tmp_path / "last.pt")["state"], weights_only=True)
    images = _images(3, seed=3)
    for direction in ("AtoB", "BtoA"):
        assert torch.equal(model.translate_batch(images, direction=direction),
                           restored.translate_batch(images, direction=direction))  # fmt: skip


def test_resume_is_exact_including_the_pools(toy_task):
    task = get_task(DataConfig(task=toy_task, image_size=16))
    steps, batch_size, seed = 6, 2, 3
    net = {"pool_size": 3, "total_steps": steps, "decay_start": 0.5, "ema_length": 0.1}  # averages resume too

    def run(model, first, last):
        for step in range(first, last):
            model.training_step(task.training_batch(step, batch_size, seed, unpaired=True))
            model.end_step()

    straight = _model(kind="paired", **net)
    run(straight, 0, steps)

    first_half = _model(kind="paired", **net)
    run(first_half, 0, steps // 2)
    state = torch.load(_saved(first_half.training_state()), weights_only=True)
    rng = ckpt.capture_rng()
    resumed = _model(kind="paired", seed=11, **net)  # other initial weights: the state must override them
    resumed.load_training_state(state)
    ckpt.restore_rng(rng)
    run(resumed, steps // 2, steps)

    assert resumed.step == straight.step == steps
    assert {"ema_generator_ab.net.1.weight", "ema_generator_ba.net.1.weight"} <= set(straight.state_dict())
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for name in ("a", "b"):
        assert len(straight.pools[name]) == 3
        assert all(torch.equal(a, b) for a, b in zip(straight.pools[name].images, resumed.pools[name].images))
        assert torch.equal(straight.pools[name].generator.get_state(), resumed.pools[name].generator.get_state())
    learning_rates = [[opt.param_groups[0]["lr"] for opt in m.optimizers.values()] for m in (straight, resumed)]
    assert learning_rates[0] == learning_rates[1] and learning_rates[0][0] < 2e-4  # decayed, and alike


# --- the data layer: paired tasks drawn unpaired -----------------------------------------------------------------
def test_paired_task_drawn_unpaired_is_unaligned_but_each_field_covers_its_epoch(toy_task):
    task = get_task(DataConfig(task=toy_task, image_size=16, load_size=16, flip=False))  # no jitter: exact items
    split = task.split("train")
    count, batch_size = len(split), 4

    def indices(batch, key):
        items = ((batch[key] + 1) * 127.5).round().to(torch.uint8)
        return [int(torch.nonzero((split.fields[key] == item).flatten(1).all(1))[0]) for item in items]

    sources, targets, aligned = [], [], []
    for step in range(count // batch_size):  # one epoch
        batch = task.training_batch(step, batch_size, seed=0, unpaired=True)
        assert set(batch) == {"source", "target"}
        sources += indices(batch, "source")
        targets += indices(batch, "target")
        paired = task.training_batch(step, batch_size, seed=0)
        aligned.append(indices(paired, "source") == indices(paired, "target"))
    assert sorted(sources) == list(range(count)) and sorted(targets) == list(range(count))
    assert sources != targets  # the pairing is broken
    assert all(aligned)  # the default draw keeps pairs together


def test_without_total_steps_the_lr_follows_the_trainers_budget():
    model = _model(decay_start=0.5)
    assert not model.schedulers
    model.budget_progress = 0.75  # the trainer sets it: three quarters of the budget (steps, images or minutes)
    model.training_step({"a": _images(1), "b": _images(1, seed=1)})
    assert [opt.param_groups[0]["lr"] for opt in model.optimizers.values()] == pytest.approx([1e-4, 1e-4])


def test_translate_reads_each_direction_in_its_own_domain():
    model = _model(channels=(1, 3), lambda_identity=0.0).eval()
    garments = _images(2, channels=3)
    edges = model.translate(garments, direction="BtoA")  # domain-B images in, domain-A images out
    assert edges.shape == (2, 1, 16, 16)
    assert torch.allclose(edges, model.translate_batch(garments, direction="BtoA"))
    assert model.translate(_images(2, channels=1)).shape == (2, 3, 16, 16)
    with pytest.raises(GenlabError, match="direction"):
        model.translate(garments, direction="sideways")
