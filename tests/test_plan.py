"""salt.plan and salt.configcheck.check_config on hand-written configs: what a run does, without Snakemake."""

from __future__ import annotations

import copy

import pytest

from salt import plan
from salt.configcheck import ConfigError, check_config
from salt.data import sources

BASE = {
    "datasets": ["jets", "shapes"],
    "dataset": {
        "jets": {"source": "pythia", "classes": ["g", "q", "W", "Z", "t"], "particles": 16, "truncation": "pt",
                 "features": ["pt", "deta", "dphi"], "split": {"val": 0.1, "test": 0.2, "seed": 3},
                 "generate": {"chunks": 3, "seed": 7}},
        "shapes": {"source": "modelnet10", "classes": ["chair", "bed"], "particles": 32, "features": ["x", "y", "z"],
                   "split": {"val": 0.1, "test": 0.0, "seed": 1, "fixed": {"*/ModelNet10/*/test": "test"}},
                   "download": {"files": ["ModelNet10.zip"], "members": ["ModelNet10/*/train", "ModelNet10/*/test"]}},
        "jc": {"source": "jetclass", "classes": [f"c{i}" for i in range(10)], "particles": 128,
               "features": ["pt", "deta", "dphi", "charge"], "options": {"step": 5},
               "download": {"files": ["JetClass_Pythia_val_5M.tar", "JetClass_Pythia_train_100M_part0.tar"],
                            "members": ["val_5M/HToBB_*", "train_100M/*"]}},
        "top": {"source": "toptagging", "classes": ["QCD", "top"], "particles": 200, "features": ["pt"],
                "sigmoid": True, "download": {"files": ["test.h5"]}},
    },
    "seeds": [1, 2],
    "variants": {"salt": {"model": "salt"}, "lin": {"model": "linformer"}, "p2": {"model": "salt", "partitions": 2}},
    "runs": [
        {"variants": ["salt", "lin"], "sorts": ["kt", "pt"], "datasets": ["jets"]},
        {"variants": ["salt"], "sorts": ["kt"], "datasets": ["jets"]},     # repeats a row: kept once
        {"variants": ["salt"], "sorts": ["radius"], "datasets": ["shapes", "jc"]},  # jc is not in datasets
    ],
    "train": {"schedule": [[128, 2]], "schedules": {"p2": [[64, 1]], "linformer": [[32, 1]]}, "lr": 1e-3,
              "threads": 4, "gpus": 2, "checkpoint_minutes": 10},
    "use_gpu": False,
}


@pytest.fixture
def config():
    return copy.deepcopy(BASE)


def test_run_matrix_is_every_combination_once_in_config_order(config):
    rows = plan.run_matrix(config)
    assert rows[:4] == [("jets", "salt", "kt", 1), ("jets", "salt", "kt", 2), ("jets", "salt", "pt", 1),
                        ("jets", "salt", "pt", 2)]
    assert len(rows) == len(set(rows)) == 2 * 2 * 2 + 2
    assert ("shapes", "salt", "radius", 2) in rows
    assert not any(d == "jc" for d, *_ in rows)  # named by a run, but not in datasets
    assert plan.variants_of(config, "jets") == ["lin", "salt"]


def test_variant_spec_takes_the_datasets_shape_and_one_sigmoid_output_for_bce(config):
    assert plan.variant_spec(config, "jets", "p2") == {"model": "salt", "partitions": 2, "particles": 16,
                                                      "features": 3, "classes": 5}
    assert plan.variant_spec(config, "top", "salt")["classes"] == 1
    assert config["variants"]["p2"] == {"model": "salt", "partitions": 2}  # not modified


def test_generated_and_downloaded_datasets_come_from_the_source_descriptors(config):
    assert plan.generated_datasets(config) == ["jets"]
    assert plan.downloaded_datasets(config) == ["shapes", "jc", "top"]
    assert plan.generated_shards(config, "jets")[:4] == ["g_000", "g_001", "g_002", "q_000"]


def test_generate_seeds_are_distinct_and_below_pythias_limit(config):
    seeds = {plan.generate_seed(config, "jets", c, k) for c in "gqWZt" for k in range(3)}
    assert len(seeds) == 15 and max(seeds) < 900_000_000 and min(seeds) == 700_000


def test_known_members_keep_the_configured_classes_and_globs(config):
    members = plan.known_members(config, "shapes", "ModelNet10.zip")
    assert sorted(members) == ["ModelNet10/bed/test/", "ModelNet10/bed/train/", "ModelNet10/chair/test/",
                               "ModelNet10/chair/train/"]
    val = plan.known_members(config, "jc", "JetClass_Pythia_val_5M.tar")
    assert val == [f"val_5M/HToBB_{i}.root" for i in range(120, 125)]
    assert plan.known_members(config, "jc", "JetClass_Pythia_train_100M_part0.tar") is None
    assert plan.listed(config, "jc", "JetClass_Pythia_train_100M_part0.tar")
    assert not plan.listed(config, "jc", "JetClass_Pythia_val_5M.tar")
    assert not plan.listed(config, "top", "test.h5")  # a plain download is its own raw file


def test_listed_members_are_the_sources_raw_files_the_globs_select(config):
    listing = ["train_100M/TTBar_000.root", "train_100M/README", "val_5M/ZToQQ_120.root", "train_100M/x.root.part"]
    assert plan.listed_members(config, "jc", listing) == ["train_100M/TTBar_000.root"]


def test_shard_names_are_the_member_path_without_suffix():
    assert plan.shard_name("val_5M/HToBB_120.root") == "val_5M-HToBB_120"
    assert plan.shard_name("ModelNet10/bed/train") == "ModelNet10-bed-train"
    assert plan.shard_name("QG_jets_19.npz") == "QG_jets_19"
    assert plan.shard_name("a b/c(1).h5") == "a-b-c-1-"


def test_fixed_split_is_the_first_matching_glob(config):
    assert plan.fixed_split(config, "shapes", "ModelNet10.zip", "ModelNet10/bed/test") == "test"
    assert plan.fixed_split(config, "shapes", "ModelNet10.zip", "ModelNet10/bed/train") is None
    config["dataset"]["top"]["split"] = {"fixed": {"test.h5": "test", "*": "train"}}
    assert plan.fixed_split(config, "top", "test.h5", None) == "test"


def test_reader_options_layer_source_defaults_classes_and_config(config):
    jc = plan.reader_options(config, "jc")
    assert jc == {"class_names": [f"c{i}" for i in range(10)], "step": 5}
    config["dataset"]["jc"]["options"]["class_names"] = ["mine"] * 10  # the config's own option wins
    assert plan.reader_options(config, "jc")["class_names"] == ["mine"] * 10
    py = plan.reader_options(config, "jets")
    assert py["label_branches"] == ["label_g", "label_q", "label_Wqq", "label_Zqq", "label_Tbqq"]
    assert py["class_names"] == ["g", "q", "W", "Z", "t"]
    assert plan.reader_options(config, "shapes") == {"classes": ["chair", "bed"]}
    assert plan.reader_options(config, "top") == {}


def test_train_settings_pick_the_schedule_and_drop_what_cannot_change_the_weights(config):
    assert plan.train_settings(config, "p2")["schedule"] == [[64, 1]]      # by variant name
    assert plan.train_settings(config, "lin")["schedule"] == [[32, 1]]     # by model family
    settings = plan.train_settings(config, "salt")
    assert settings == {"schedule": [[128, 2]], "lr": 1e-3}
    assert plan.run_settings(config) == {"checkpoint_minutes": 10}
    assert plan.train_processes(config) == 1 and plan.train_device(config) == "cpu"
    config["use_gpu"] = True
    assert plan.train_processes(config) == 2 and plan.train_device(config) == "cuda"


def test_every_source_has_a_descriptor_and_downloaded_ones_a_catalogue():
    for name in sources.MODULES:
        src = sources.get(name)
        assert src.name == name and src.kind in ("jet", "points")
        assert src.generated == (name == "pythia")
        assert hasattr(__import__(src.reader, fromlist=["iter_records"]), "iter_records")


def _runnable(config):
    """The config without the parts check_config is not asked about in a test."""
    del config["dataset"]["jc"]
    config["runs"][2]["datasets"] = ["shapes"]
    return config


def test_check_config_accepts_a_good_config(config):
    check_config(_runnable(config))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["runs"][0]["variants"].append("nope"), "runs[0] names variant 'nope'"),
    (lambda c: c["datasets"].append("ghost"), "datasets lists 'ghost'"),
    (lambda c: c["dataset"]["jets"].pop("generate"), "dataset.jets has source pythia but no generate"),
    (lambda c: c["dataset"]["top"]["download"]["files"].append("train.h6"), "'train.h6'] are not files of toptagging"),
    (lambda c: c["dataset"]["shapes"]["classes"].append("sofa_bed"), "['sofa_bed'] are not modelnet10 classes"),
    (lambda c: c["dataset"]["shapes"]["download"].update(members=["Model*/none"]), "select none of the members"),
    (lambda c: c["dataset"]["top"].update(classes=["top", "QCD"]), "classes must be ['QCD', 'top']"),
    (lambda c: c["runs"][2].update(sorts=["kt"]), "sorts dataset 'shapes' (point clouds) by ['kt']"),
    (lambda c: c["dataset"]["shapes"].update(features=["x", "pt"]), "features"),
    (lambda c: c["variants"]["salt"].update(heads=3, d_model=16), "variants.salt on dataset"),
])
def test_check_config_names_the_offending_key(config, edit, message):
    config = _runnable(config)
    edit(config)
    with pytest.raises(ConfigError, match=__import__("re").escape(message)):
        check_config(config)


def test_check_config_counts_label_branches_for_jetclass(config):
    config["datasets"].append("jc")
    config["dataset"]["jc"]["classes"] = ["a", "b"]
    with pytest.raises(ConfigError, match="names 2 classes; the files have 10 label branches"):
        check_config(config)
