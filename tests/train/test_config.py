"""Recipes: YAML defaults, flag overrides, validation errors, inheritance; every recipe in configs/ builds."""

from pathlib import Path

import pytest
import torch
import yaml

from slac.data import dataset_spec, load_dataset
from slac.train import ConfigError, TrainConfig, load_config, parse_overrides
from slac.train.model import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "base" and p.name != "base.yaml")


def test_default_is_the_digits_lenet_slac_ann():
    config = load_config(None)
    assert (config.model, config.form, config.head, config.dataset) == ("lenet", "ann", "slac", "digits")
    assert config.run_name == "lenet_ann_slac_digits_seed0"
    # The embedded default and the recipe file that documents it agree.
    assert load_config(CONFIGS / "digits" / "lenet_ann_slac.yaml").to_dict() == {
        **config.to_dict(),
        "head_options": {"likelihood_weight": 0.01, "angle_weight": 0.1},
    }


def test_overrides_are_parsed_as_yaml():
    values = parse_overrides(
        [
            "--epochs",
            "3",
            "--amp=bf16",
            "--eta",
            "null",
            "--head_options.angle_weight",
            "1",
            "--lr",
            "1e-2",
            "--model-options",
            "{feature_dim: 2}",
        ]
    )
    assert values == {
        "epochs": 3,
        "amp": "bf16",
        "eta": None,
        "head_options": {"angle_weight": 1},
        "lr": "1e-2",
        "model_options": {"feature_dim": 2},
    }
    config = load_config(None, ["--epochs", "3", "--lr", "1", "--head_options.angle_weight", "1"])
    assert config.epochs == 3 and config.lr == 1.0 and isinstance(config.lr, float)
    assert load_config(None, ["--lr", "1e-2"]).lr == 0.01  # YAML 1.1 reads 1e-2 as a string
    assert config.head_options == {"angle_weight": 1}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epoch", "3"], "unknown key 'epoch'; did you mean 'epochs'"),
        (["--epochs"], "--epochs needs a value"),
        (["epochs", "3"], "expected a --key value pair"),
        (["--epochs", "3.5"], "epochs: must be an integer"),
        (["--epochs", "0"], "epochs: must be >= 1"),
        (["--lr", "-1"], "lr: must be finite and >= 0"),
        (["--lr", "abc"], "lr: must be a number"),
        (["--momentum", "1"], "momentum: must be < 1"),
        (["--amp", "fp8"], "amp: must be one of off, bf16, fp16"),
        (["--model", "resnet21"], "model: must be one of"),
        (["--head", "arcface"], "head: must be one of"),
        (["--dataset", "svhn"], "dataset: must be one of"),
        (["--eta", "0"], "eta: must be > 0, or null"),
        (["--augment", "yes please"], "augment: must be true or false"),
        (["--warmup_epochs", "50"], "warmup_epochs"),
        (["--device", "tpu"], "device: must be auto, cpu"),
        (["--model_options.num_classes", "3"], "set by the recipe's own key"),
        (["--lr.x", "3"], "only head_options and model_options take dotted keys"),
        (["--name", "a/b"], "name: must be a plain directory name"),
        (["--covariance_lr_factor", "0"], "covariance_lr_factor: must be finite and > 0"),
    ],
)
def test_bad_values_are_clear_errors(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, flags)


def test_base_inheritance_merges_option_mappings(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "epochs: 7\nhead: slac\nhead_options: {likelihood_weight: 0.5, angle_weight: 0.2}\n"
    )
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nlr: 0.05\nhead_options: {angle_weight: 0.0}\n")
    config = load_config(tmp_path / "child.yaml", ["--head_options.likelihood_weight", "0.25"])
    assert config.epochs == 7 and config.lr == 0.05
    assert config.head_options == {"likelihood_weight": 0.25, "angle_weight": 0.0}


def test_recipe_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("weight_decy: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'weight_decay'"):
        load_config(tmp_path / "typo.yaml")
    # the default head changed (slac -> linear): a recipe file that does not name one is not read either way
    (tmp_path / "headless.yaml").write_text("epochs: 3\n")
    with pytest.raises(ConfigError, match="the recipe does not name its head; add head: slac"):
        load_config(tmp_path / "headless.yaml")
    assert load_config(tmp_path / "headless.yaml", ["--head", "linear"]).head == "linear"


def test_there_is_a_recipe_for_every_table_row():
    names = {str(p.relative_to(CONFIGS)) for p in RECIPES}
    for model in ("vgg_small", "resnet20", "resnet32"):
        for dataset in ("cifar10", "cifar100"):
            for method in ("cnn", "bnn", "ann", "slac_ann"):
                assert f"table1/{model}_{dataset}_{method}.yaml" in names
    for model in ("resnet18", "resnet50"):
        for method in ("cnn", "bnn", "ann", "slac_ann"):
            assert f"table2/{model}_imagenet_{method}.yaml" in names
    for dataset in ("cifar10", "cifar100"):
        for head in ("lsoftmax", "lgm", "mom", "sl", "slac"):
            assert f"table3/resnet20_{dataset}_{head}_ann.yaml" in names
        for method in ("ann", "slac_ann"):
            for epochs in (400, 800, 1200):
                assert f"fig4c/resnet20_{dataset}_{method}_{epochs}ep.yaml" in names
    assert len([n for n in names if n.startswith("table4/")]) == 6
    assert {f"fig3/lenet2d_mnist_{h}_ann.yaml" for h in ("lgm", "mom", "sl", "slac")} <= names


def test_paper_hyper_parameters_in_the_recipes():
    row = load_config(CONFIGS / "table1" / "resnet20_cifar100_slac_ann.yaml")
    assert (row.lr, row.momentum, row.weight_decay, row.batch_size, row.epochs) == (0.1, 0.9, 5e-4, 256, 800)
    assert (row.schedule, row.covariance_lr_factor, row.eta) == ("cosine", 100.0, 0.2)
    assert row.head_options == {"likelihood_weight": 0.01, "angle_weight": 0.1}
    imagenet = load_config(CONFIGS / "table2" / "resnet18_imagenet_slac_ann.yaml")
    assert (imagenet.weight_decay, imagenet.epochs, imagenet.covariance_lr_factor) == (1e-5, 300, 1000.0)
    ablation = load_config(CONFIGS / "table4" / "resnet20_cifar100_slac_ann_fixed_skewness.yaml")
    assert ablation.head_options == {"likelihood_weight": 0.01, "angle_weight": 0.1, "learn_skewness": False}
    assert load_config(CONFIGS / "fig4c" / "resnet20_cifar10_ann_1200ep.yaml").epochs == 1200


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_recipe_parses_and_builds_its_model(recipe):
    config = load_config(recipe)
    image_shape, num_classes = dataset_spec(config.dataset)
    with torch.device("meta"):  # the architecture and head options are checked; no memory, no time
        model = build_model(config, image_shape, num_classes)
    assert model.num_classes == num_classes
    assert model.form == config.form and model.head_name == config.head


def test_dataset_specs_match_the_loaded_data():
    digits = load_dataset("digits", split="test")
    assert dataset_spec("digits") == (digits.image_shape, digits.num_classes)


def test_config_round_trips_through_its_dict():
    config = TrainConfig(epochs=3, head_options={"angle_weight": 1.0})
    assert TrainConfig(**config.to_dict()) == config


def test_a_recipe_saved_before_recalibration_keeps_its_meaning(tmp_path):
    """config.yaml and checkpoints written before bn_recalibration/eval_bn existed scored running statistics:
    read back (slac report, slac plot, --resume, slac eval) they say so, not today's defaults."""
    from slac.analysis.runs import load_run
    from slac.train.config import saved_config

    old = TrainConfig().to_dict()
    del old["bn_recalibration"], old["eval_bn"]
    config = saved_config(old, "old config.yaml")
    assert (config.eval_bn, config.bn_recalibration) == ("running", 0)
    assert (TrainConfig().eval_bn, TrainConfig().bn_recalibration) == ("recalibrated", 32)  # today's default
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_run(tmp_path).config.eval_bn == "running"
