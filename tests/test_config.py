"""Config validation names the bad field and the allowed values; run ids are stable hashes."""
import dataclasses

import pytest
import yaml

from bench.errors import ConfigError, UnknownMethod
from bench.run import config

BASE = {
    "name": "t", "methods": {"magnitude": {}}, "seeds": [0, 1], "targets": ["macs:0.5", 0.3],
    "datasets": {"mnist": {"models": ["lenet5"], "pretrain": {"epochs": 1}}},
}


def cfg(**changes):
    raw = {**BASE, **changes}
    return config.from_dict(raw)


def test_expand_is_the_full_cross_product_with_stable_ids():
    specs = cfg().expand()
    assert len(specs) == 1 * 1 * 2 * 2
    assert {(s.target_kind, s.target) for s in specs} == {("macs", 0.5), ("macs", 0.3)}
    assert len({s.run_id for s in specs}) == 4
    assert [s.run_id for s in cfg().expand()] == [s.run_id for s in specs]


def test_run_id_ignores_paths_but_not_recipes():
    a = cfg().expand()[0]
    b = cfg(data_dir="/elsewhere", results_dir="/tmp/x").expand()[0]
    assert a.run_id == b.run_id
    c = dataclasses.replace(a, finetune=dataclasses.replace(a.finetune, epochs=7))
    assert c.run_id != a.run_id


def test_latency_passes_reach_every_spec_and_enter_the_run_id_only_when_not_the_default():
    plain = cfg().expand()[0]
    assert "latency" not in plain.canonical()  # ids of runs made before the setting existed stay valid
    assert cfg(latency={"repeats_b1": 30, "repeats_b64": 10, "warmup": 3}).expand()[0].run_id == plain.run_id
    quick = cfg(latency={"repeats_b1": 2, "repeats_b64": 1}).expand()
    assert {s.latency for s in quick} == {config.LatencyConfig(repeats_b1=2, repeats_b64=1, warmup=3)}
    assert quick[0].latency.repeats() == {1: 2, 64: 1}
    assert quick[0].run_id != plain.run_id and quick[0].flat_params()["latency.repeats_b1"] == "2"


@pytest.mark.parametrize("changes,match", [
    ({"methods": {"nope": {}}}, "method 'nope' is not registered; allowed: .*magnitude"),
    ({"methods": {"magnitude": {"strategy": "bogus"}}}, "strategy.*allowed: greedy, independent"),
    ({"methods": {"magnitude": {"colour": 1}}}, r"methods.magnitude.colour: unknown option .* allowed: strategy"),
    ({"datasets": {"cifar100": {"models": ["vgg"]}}}, "datasets.cifar100: .*allowed: mnist, cifar10, svhn"),
    ({"datasets": {"mnist": {"models": ["alexnet"]}}}, r"datasets.mnist.models\[0\]: model 'alexnet' .*allowed: lenet5"),
    ({"datasets": {"mnist": {"models": ["lenet5"], "pretrain": {"epochz": 1}}}}, "pretrain.epochz: unknown field; allowed: epochs"),
    ({"datasets": {"mnist": {"models": ["lenet5"], "pretrain": {"lr": "fast"}}}}, "pretrain.lr: expected a number"),
    ({"datasets": {"mnist": {"models": ["lenet5"], "finetune": {"schedule": "magic"}}}}, "schedule: 'magic' .*allowed: cosine, step, constant"),
    ({"targets": ["flops:0.5"]}, "target kind 'flops' is unknown; allowed: macs, params"),
    ({"targets": [1.5]}, r"reduction 1.5 must be a fraction in \(0, 1\)"),
    ({"seeds": ["a"]}, "seeds: expected a list of integers"),
    ({"pruning": {"ranking": "best"}}, "pruning.ranking: 'best' is unknown; allowed: per_layer, global"),
    ({"colour": "red"}, "colour: unknown field; allowed: name, methods"),
    ({"latency": {"repeats_b1": 0}}, "latency: repeats_b1 and repeats_b64 must be >= 1 and warmup >= 0"),
    ({"latency": {"repeats": 3}}, "latency.repeats: unknown field; allowed: repeats_b1, repeats_b64, warmup"),
])
def test_bad_config_errors_name_field_and_allowed_values(changes, match):
    with pytest.raises(ConfigError, match=match):
        cfg(**changes)


def test_unknown_method_is_a_config_error():
    with pytest.raises(UnknownMethod):
        cfg(methods={"nope": {}})


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_cli_overrides_narrow_the_grid_and_reject_unknown_names():
    c = cfg(datasets={"mnist": {"models": ["lenet5"]}, "cifar10": {"models": ["resnet20"]}})
    o = config.override(c, methods=["random"], datasets=["mnist"], seeds=[3], targets=["params:0.4"])
    specs = o.expand()
    assert {(s.method, s.dataset, s.seed, s.target_kind, s.target) for s in specs} == {("random", "mnist", 3, "params", 0.4)}
    with pytest.raises(ConfigError, match="--datasets: 'svhn' is not in this config"):
        config.override(c, datasets=["svhn"])
    with pytest.raises(UnknownMethod):
        config.override(c, methods=["nope"])


@pytest.mark.parametrize("preset", ["configs/smoke.yaml", "configs/quick.yaml", "configs/ablations.yaml"])
def test_presets_are_valid(preset):
    c = config.load(preset)
    assert c.expand()
    assert yaml.safe_load(open(preset))["name"] == c.name


def test_ablations_preset_pairs_each_mechanism_with_its_plain_method():
    """Issue 18's ablations: each variant differs from its plain row in one mechanism only, on the
    quick MNIST / CIFAR-10 cells at -50 % MACs over 3 seeds, with magnitude as the reference row."""
    runs = config.load("configs/ablations.yaml").expand()
    variants = {r.variant for r in runs}
    assert variants == {"magnitude", "rls", "rls@no_p", "rls@exact_p", "rls@no_prune", "pls_vip", "pls_vip@per_layer",
                        "csgd", "csgd@literal_eps", "feature_map", "feature_map@activation", "rl_agent",
                        "rl_agent@l1_fill"}
    assert len(runs) == len(variants) * 2 * 3
    assert {(r.dataset, r.model_label) for r in runs} == {("mnist", "lenet5"), ("cifar10", "vgg-depth11-width0.25")}
    assert {r.seed for r in runs} == {0, 1, 2} and {(r.target_kind, r.target) for r in runs} == {("macs", 0.5)}
    one = {r.variant: r for r in runs if r.dataset == "mnist" and r.seed == 0}
    args = {v: dict(r.method_args) for v, r in one.items()}
    assert args["rls@no_p"] == {**args["rls"], "use_p": False}
    assert args["rls@exact_p"] == {**args["rls"], "exact_p": True}
    assert args["rls@no_prune"] == {**args["rls"], "prune": False}
    assert args["csgd"] == {"epsilon": "paper_contraction"}
    assert args["csgd@literal_eps"] == {**args["csgd"], "epsilon": 0.003}
    assert args["feature_map@activation"] == {**args["feature_map"], "scoring": "activation"}
    assert args["rl_agent@l1_fill"] == {**args["rl_agent"], "fill": "l1"}
    assert (one["pls_vip"].pruning.ranking, one["pls_vip"].pruning.rounds) == ("global", 8)
    assert (one["pls_vip@per_layer"].pruning.ranking, one["pls_vip@per_layer"].pruning.rounds) == ("per_layer", 1)
    assert args["pls_vip@per_layer"] == args["pls_vip"]
