"""The configuration schema: one declaration per key, one validation, typed values, one-line errors."""

from __future__ import annotations

import copy

import pytest

from attnflow.config import (
    DEFAULTS,
    ConfigError,
    apply_overrides,
    list_presets,
    load_preset,
    resolve_config,
    validate_config,
    validate_model,
)
from attnflow.config import schema as S
from attnflow.models import register_backbone


def _walk(keys: dict[str, S.Key], values: dict, prefix: str):
    """(dotted name, Key, value) for every key of a validated section, nested sections included."""
    for name, key in keys.items():
        if isinstance(key, S.Section):
            yield from _walk(key.keys, values[name], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", key, values[name]


def _declared(config: dict):
    m = config["model"]
    yield from _walk(S.TOP, config, "")
    yield from _walk({**S.MODEL, **S.BACKBONES[m["backbone"]]}, m, "model.")
    yield from _walk(S.DATA, config["data"], "data.")
    yield from _walk(S.TRAIN, config["train"], "train.")


TYPES = {S.Int: int, S.Float: float, S.Bool: bool, S.Str: str, S.Path: str, S.Choice: str, S.Mapping: dict}


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_validates_to_typed_values_and_validation_is_idempotent(preset):
    config = validate_config(load_preset(preset))
    assert validate_config(copy.deepcopy(config)) == config
    for name, key, value in _declared(config):
        if value is None:
            assert key.optional, name
        elif isinstance(key, S.List):
            assert isinstance(value, list) and all(type(v) is TYPES[type(key.item)] for v in value), name
        elif isinstance(key, S.IntOrList):
            assert type(value) is int or all(type(v) is int for v in value), name
        else:
            assert type(value) is TYPES[type(key)], (name, value)


def test_defaults_come_from_the_schema():
    assert set(DEFAULTS) == {*S.TOP, "model", "data", "train"}
    assert DEFAULTS["train"] == {k: key.default for k, key in S.TRAIN.items()}
    assert DEFAULTS["model"] == {k: key.default for k, key in S.MODEL.items()}
    srflow = validate_model({"backbone": "srflow"})
    assert srflow["cond"] == S.BACKBONES["srflow"]["cond"].default and srflow["scale"] == 8
    assert validate_model({"backbone": "rrdb"})["cond"] == {"features": 64, "blocks": 8, "growth": 32}


def test_values_are_converted_once_to_their_declared_types():
    config = resolve_config("mnist", overrides=["train.lr=1e-3", "train.weight_decay=0", "train.optimizer=Adam",
                                                "train.grad_clip=5", "data.root=''"])
    t = config["train"]
    assert t["lr"] == 0.001 and type(t["lr"]) is float  # YAML reads 1e-3 as a string
    assert type(t["weight_decay"]) is float and type(t["grad_clip"]) is float
    assert t["optimizer"] == "adam"  # the declared spelling
    assert config["data"]["root"] is None  # an empty path is null


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.steps=0", "train.steps must be an integer >= 1, got 0"),
        ("train.steps=true", "train.steps must be an integer >= 1, got True"),
        ("train.seed=1.0", "train.seed must be an integer, got 1.0"),
        ("train.eval_max_batches=0", "train.eval_max_batches must be an integer >= 1 or null, got 0"),
        ("train.lr=0", "train.lr must be a finite number > 0, got 0"),
        ("train.lr=.inf", "train.lr must be a finite number > 0, got inf"),
        ("train.lr=fast", "train.lr must be a finite number > 0, got 'fast'"),
        ("train.betas=[0.9]", "train.betas must be two numbers in [0, 1), got [0.9]"),
        ("train.lr_milestones=[0.5, 2]", "train.lr_milestones must be a list of fractions in [0, 1], got [0.5, 2]"),
        ("train.freeze_conditioner_until=1.5",
         "train.freeze_conditioner_until must be a fraction of training in [0, 1] or null, got 1.5"),
        ("train.sample_temperatures=[]", "train.sample_temperatures must be a non-empty list of numbers >= 0"),
        ("train.optimizer=sgd", "train.optimizer must be 'adam' or 'adamax', got 'sgd'"),
        ("train.autocast=int8", "train.autocast must be 'bf16', 'fp16' or null, got 'int8'"),
        ("train.compile=1", "train.compile must be true or false, got 1"),
        ("model.n_bins=512", "model.n_bins must be an integer in 2..256 (the data are 8-bit images), got 512"),
        ("model.image_shape=[1, 28]", "model.image_shape must be [channels, height, width] of integers >= 1"),
        ("model.patches=[4, 0]", "model.patches must be an integer >= 1 or a list of them, got [4, 0]"),
        ("model.patches=[]", "model.patches must be an integer >= 1 or a list of them, got []"),
        ("model.dropout=1", "model.dropout must be a number in [0, 1), got 1"),
        ("model.itrans_scale=fixed", "model.itrans_scale must be 'learned' or 'none', got 'fixed'"),
        ("model.prior=flow", "model.prior must be 'ar' or 'gaussian', got 'flow'"),
        ("data.options=3", "data.options must be a mapping of keys to values, got 3"),
        ("data.flip=yes please", "data.flip must be true or false, got 'yes please'"),
        ("paper_params_M=-1", "paper_params_M must be a finite number >= 0 or null, got -1"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(setting, message):
    with pytest.raises(ConfigError) as info:
        resolve_config("mnist", overrides=[setting])
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("preset", "setting", "message"),
    [
        ("sr-demo", "model.cond.width=3", "model.cond: unknown key(s) width for backbone 'srflow'; valid keys: features"),
        ("sr-demo", "model.cond.taps=[1, -1]", "model.cond.taps must be a list, each item an integer >= 0"),
        ("sr-demo", "model.cond.pretrained=3", "model.cond.pretrained must be the path of a weights file or null"),
        ("sr-demo", "model.cond.top_prior=flow", "model.cond.top_prior must be 'standard' or 'conditional'"),
        ("sr-demo", "model.steps=[2, 0]", "model.steps must be an integer >= 1 or a list of them"),
        ("sr-demo", "model.n_bins=32", "model.n_bins=32: fewer bins are applied to the unconditional backbones"),
        ("sr-demo", "model.components=4", "model.components: backbone 'srflow' does not use this key (it belongs to "
                                         "marflow)"),
        ("sr-demo-rrdb", "model.attention=imap", "model.attention must be 'none', got 'imap'; backbone 'rrdb' has no "
                                                 "attention"),
        ("cityscapes-fullglow-4-16", "model.prior=ar", "model.prior must be 'gaussian', got 'ar'"),
        ("cityscapes-fullglow-4-16", "model.cond.label_mode=ids",
         "model.cond.label_mode must be 'color' or 'onehot', got 'ids'"),
        ("mnist", "model.stepz=2", "unknown config key 'model.stepz' (backbone 'marflow')"),
        ("mnist", "train.stepz=2", "unknown config key 'train.stepz'; valid keys here: train.autocast"),
        ("mnist", "model.backbone=vae", "unknown model.backbone 'vae'; available: fullglow, glow, marflow"),
    ],
)
def test_backbone_keys_are_checked_for_the_chosen_backbone(preset, setting, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(preset, overrides=[setting])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_only_the_chosen_backbones_keys_are_filled_in():
    glow = validate_config({"model": {"backbone": "glow"}})["model"]
    assert "components" not in glow and glow["prior"] == "ar" and "cond" not in glow
    assert validate_config({"model": {"backbone": "fullglow"}})["model"]["prior"] == "gaussian"


def test_a_registered_backbone_brings_its_own_keys():
    @register_backbone("tiny-test-backbone", {"width": S.Int(3, 1)})
    def build(m):  # pragma: no cover - never built here
        raise AssertionError

    try:
        assert validate_model({"backbone": "tiny-test-backbone"})["width"] == 3
        with pytest.raises(ConfigError, match="model.width must be an integer >= 1, got 0"):
            validate_model({"backbone": "tiny-test-backbone", "width": 0})
    finally:
        from attnflow.models.registry import BACKBONES

        BACKBONES.pop("tiny-test-backbone")
        S.BACKBONES.pop("tiny-test-backbone")


def test_overrides_keep_the_set_syntax_and_section_errors():
    config = apply_overrides(load_preset("mnist"), ["model.patches=[4, 2]", "train.steps=3"])
    assert config["model"]["patches"] == [4, 2] and config["train"]["steps"] == 3
    with pytest.raises(ConfigError, match="'train' is a config section, not a value"):
        apply_overrides(load_preset("mnist"), ["train=5"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides(load_preset("mnist"), ["train.steps"])
