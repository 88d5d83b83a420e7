"""Config mistakes that pass the schema stop the workflow before any job, in one line naming the key."""

from __future__ import annotations

import pytest
from workflowrun import ROOT, copy_workflow, snakemake, tiny_config

from salt.configcheck import ConfigError, check_datasets, check_keys, check_variants

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def test_a_misspelled_key_is_named_with_its_place_and_a_suggestion():
    config = tiny_config()
    check_keys(config, SCHEMA)
    config["runs"][0]["variatns"] = config["runs"][0].pop("variants")
    with pytest.raises(ConfigError, match=r"^config.runs\[0\]: unknown key 'variatns'; did you mean 'variants'\?"):
        check_keys(config, SCHEMA)
    config = tiny_config()
    config["dataset"]["pythia"]["split"]["tset"] = 0.2   # under a name-keyed map ($ref)
    with pytest.raises(ConfigError, match=r"^config.dataset.pythia.split: unknown key 'tset'; did you mean 'test'"):
        check_keys(config, SCHEMA)


def test_features_must_be_ones_the_source_delivers():
    config = tiny_config()
    config["dataset"]["pythia"]["features"] = ["pt", "deta", "dphi", "charge", "log_pt_rel"]
    check_datasets(config)
    config["dataset"]["pythia"]["features"] = ["pt", "d0val"]   # a JetClass track branch; generated files lack it
    with pytest.raises(ConfigError, match=r"dataset.pythia.features: \['d0val'\] are not features of source pythia"):
        check_datasets(config)


def test_a_spec_error_names_variant_and_dataset():
    spec = {"model": "salt", "particles": 16, "features": 3, "classes": 5}
    check_variants({("pythia", "salt"): spec})
    with pytest.raises(ConfigError, match="variants.wide on dataset pythia: .*not divisible by heads 5"):
        check_variants({("pythia", "wide"): spec | {"heads": 5}})


def edit(config, change):
    change(config)
    return config


MISTAKES = {
    "split": (lambda c: c["dataset"]["pythia"]["split"].update(val=0.7, test=0.6),
              "config: dataset.pythia.split: val 0.7 + test 0.6 = 1.3 leaves no jets for training"),
    "feature": (lambda c: c["dataset"]["pythia"].update(features=["pt", "deta", "dphy"]),
                "config: dataset.pythia.features: ['dphy'] are not features of source pythia"),
    "heads": (lambda c: c["variants"]["salt"].update(heads=5),
              "config: variants.salt on dataset pythia: model spec: d_model 16 is not divisible by heads 5"),
    "key": (lambda c: c.update(trian=c.pop("train")), "config: unknown key 'trian'; did you mean 'train'?"),
}


@pytest.mark.workflow
@pytest.mark.slow
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_the_workflow_stops_before_any_job_with_one_message(mistake, tmp_path):
    change, message = MISTAKES[mistake]
    work = copy_workflow(tmp_path, edit(tiny_config(), change))
    proc = snakemake(work, "-n", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-3000:]
    assert len(out.splitlines()) < 12 and "Building DAG" not in out, out[-3000:]
