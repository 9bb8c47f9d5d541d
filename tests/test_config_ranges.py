"""Every numeric config field has a declared range, checked for YAML, `--set`, options and `--dry-run` alike.

Hypothesis throws random invalid values and types at every field of every section (the dataclasses are walked)
and at the `train` command's options: each is either accepted and then valid, or refused with one line naming
the key, never a traceback.
"""

import dataclasses
import math
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab.cli import main
from genlab.config import (
    DataConfig,
    Range,
    TrainConfig,
    apply_override,
    check_range,
    dataclass_from_dict,
    field_range,
    set_value,
    validate_config,
)
from genlab.models import MODELS
from genlab.nn.diffusion_unet import DiffusionUNetConfig
from genlab.runs import build_run_config, run_config_from_dict
from genlab.utils import GenlabError

FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECTIONS = {"data": DataConfig, "train": TrainConfig}
FAMILY_CONFIGS = {name: cls.config_class for name, cls in MODELS.items()}
ALL_CLASSES = [DataConfig, TrainConfig, DiffusionUNetConfig, *FAMILY_CONFIGS.values()]


def numeric_fields(cls):
    """(field, base type) for every int/float field (also inside Optional and tuples) of a dataclass."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
        for option in options:
            base = typing.get_args(option)[0] if typing.get_origin(option) in (tuple, list) else option
            if base in (int, float):
                yield item, base


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_numeric_field_declares_a_range(cls):
    missing = [item.name for item, _ in numeric_fields(cls) if "range" not in item.metadata]
    assert not missing, f"{cls.__name__}: no range for {missing}"


def test_defaults_and_every_preset_are_in_range():
    for name, family in MODELS.items():
        for preset in family.presets:
            validate_config(build_run_config(name, preset))


def outside(allowed: Range, base: type):
    """Values just outside `allowed`, plus NaN and infinities."""
    values = [float("nan"), float("inf"), float("-inf")]
    step = 1 if base is int else 1e-9
    if allowed.low is not None:
        values.append(allowed.low if allowed.low_open else allowed.low - step)
        values.append(allowed.low - 1e6)
    if allowed.high is not None:
        values.append(allowed.high if allowed.high_open else allowed.high + step)
        values.append(allowed.high + 1e6)
    return [base(v) if base is int and math.isfinite(v) and v == int(v) else v for v in values]


def _cases():
    for name, cls in [("data", DataConfig), ("train", TrainConfig)] + [(f"net:{m}", c) for m, c in
                                                                        FAMILY_CONFIGS.items()]:
        for item, base in numeric_fields(cls):
            for value in outside(item.metadata.get("range", Range()), base):
                yield name, cls, item.name, value


@pytest.mark.parametrize("section, cls, key, value", list(_cases()))
def test_values_just_outside_the_range_are_refused_everywhere(section, cls, key, value):
    with pytest.raises(GenlabError) as error:
        dataclass_from_dict(cls, {key: value}, "config.yaml: x")
    assert key in str(error.value) and "\n" not in str(error.value)
    model = section.split(":")[1] if section.startswith("net:") else "pix2pix"
    config = build_run_config(model)
    dotted = f"net.{key}" if section.startswith("net:") else f"{section}.{key}"
    for assign in (lambda: set_value(config, dotted, value), lambda: apply_override(config, f"{dotted}={value}")):
        with pytest.raises(GenlabError) as error:
            assign()
        assert dotted in str(error.value) and "\n" not in str(error.value)


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 300), st.floats(), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def valid_value(cls, key, value) -> bool:
    """An oracle written apart from check_value: right type (bools are not numbers) and in range."""
    hint = typing.get_type_hints(cls)[key]
    allowed = field_range(cls, key)

    def fits(hint, value):
        origin = typing.get_origin(hint)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            return any(fits(arg, value) for arg in typing.get_args(hint))
        if hint is type(None):
            return value is None
        if origin is typing.Literal:
            return value in typing.get_args(hint)
        if origin in (tuple, list):
            args = typing.get_args(hint)
            if not isinstance(value, (list, tuple)):
                return False
            if origin is tuple and Ellipsis not in args:  # tuple[float, float]: exactly that many values
                return len(value) == len(args) and all(fits(arg, v) for arg, v in zip(args, value, strict=True))
            return all(fits(args[0], v) for v in value)
        if hint is bool:
            return isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool) and (allowed is None or
                                                                                allowed.contains(value))
        if hint is float:
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and (allowed is None or allowed.contains(float(value))) and math.isfinite(float(value)))
        if hint is str:
            return isinstance(value, str)
        return True

    return fits(hint, value)


FIELDS = [(cls, item.name) for cls in ALL_CLASSES for item in dataclasses.fields(cls)]


@FAST
@given(st.sampled_from(FIELDS), ANY_VALUE)
def test_random_values_and_types_at_every_field(field, value):
    cls, key = field
    try:
        result = dataclass_from_dict(cls, {key: value}, "config")
    except GenlabError as error:
        assert "\n" not in str(error) and key in str(error)
        if not isinstance(value, str):  # strings may be numbers in disguise ("3e-3")
            assert not valid_value(cls, key, value), f"{key}={value!r} wrongly refused: {error}"
        return
    stored = getattr(result, key)
    assert valid_value(cls, key, stored), f"{cls.__name__}.{key}={value!r} wrongly accepted"
    check_range(stored, field_range(cls, key), key)


@FAST
@given(st.sampled_from(sorted(MODELS)), st.sampled_from(["data", "train", "net"]), st.data())
def test_random_yaml_sections_are_refused_or_valid(model, section, data):
    cls = SECTIONS.get(section) or FAMILY_CONFIGS[model]
    item = data.draw(st.sampled_from(dataclasses.fields(cls)))
    value = data.draw(ANY_VALUE)
    try:
        config = run_config_from_dict({"model": model, section: {item.name: value}}, "config.yaml")
    except GenlabError as error:
        assert "\n" not in str(error)
        return
    validate_config(config)


OPTIONS = {
    "--size": st.integers(-10, 5000),
    "--steps": st.integers(-10, 10**7),
    "--images": st.integers(-10, 10**7),
    "--batch-size": st.integers(-3, 70000),
    "--seed": st.integers(-(2**64), 2**64),
    "--minutes": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
}
SET_KEYS = [f"{name}.{item.name}" for name, cls in SECTIONS.items() for item in dataclasses.fields(cls)] + [
    f"net.{item.name}" for item in dataclasses.fields(MODELS["pix2pix"].config_class)
]
YAML_VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats().map(repr),
    st.sampled_from([".nan", ".inf", "-.inf", "nan", "1e999", "[1, 2]", "{a: 1}", "true", "null", "''", "x", "[",
                     "0", "-0.0", "1e-3", "3e-3"]),
)


@settings(max_examples=40, deadline=4000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(OPTIONS)), st.data(), st.sampled_from(SET_KEYS), YAML_VALUES)
def test_cli_dry_run_answers_one_line_or_a_valid_config(capsys, option, data, key, raw):
    value = data.draw(OPTIONS[option])
    capsys.readouterr()
    code = main(["train", "pix2pix", "--dry-run", f"{option}={value}", "--set", f"{key}={raw}"])
    out, err = capsys.readouterr()
    if code == 2:
        assert err.startswith("genlab: error: ") and len(err.strip().splitlines()) == 1, err
        return
    assert code == 0
    config = run_config_from_dict(yaml.safe_load(out), "dry-run output")
    validate_config(config)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-size", "0"], "train.batch_size: 0 is out of range (allowed: [1, 65536])"),
        (["--set", "train.log_every=0"], "train.log_every: 0 is out of range (allowed: >= 1)"),
        (["--set", "train.checkpoint_every=0"], "train.checkpoint_every: 0 is out of range"),
        (["--set", "net.lr=-1"], "net.lr: -1.0 is out of range (allowed: > 0)"),
        (["--set", "net.lr=.nan"], "net.lr: nan is out of range"),
        (["--set", "net.dropout=2.0"], "net.dropout: 2.0 is out of range (allowed: [0, 1))"),
        (["--set", "net.width=0"], "net.width: 0 is out of range (allowed: >= 1)"),
        (["--steps", "-5"], "train.steps: -5 is out of range (allowed: >= 1)"),
        (["--minutes", "0"], "train.minutes: 0.0 is out of range (allowed: > 0)"),
        (["--set", "train.nan_lr_factor=1.5"], "train.nan_lr_factor: 1.5 is out of range (allowed: (0, 1))"),
    ],
)
def test_the_reported_values_are_refused_by_dry_run(capsys, args, fragment):
    code = main(["train", "pix2pix", "--dry-run", *args])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_a_size_the_family_cannot_build_names_data_image_size(toy_task, tmp_path, capsys):
    code = main(["train", "pix2pix", "--task", "toy-paired", "--size", "33", "--steps", "1", "--out",
                 str(tmp_path / "run"), "--quiet", "--set", "net.width=4"])
    err = capsys.readouterr().err
    assert code == 2 and "data.image_size=33" in err and "power-of-two" in err


def test_config_files_that_are_not_text_or_not_a_mapping(tmp_path, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    listing = tmp_path / "list.yaml"
    listing.write_text("- model\n- pix2pix\n")
    for path, fragment in ((binary, "binary.yaml: not a text file"), (listing, "expected a mapping")):
        code = main(["train", "--config", str(path), "--dry-run"])
        err = capsys.readouterr().err
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
