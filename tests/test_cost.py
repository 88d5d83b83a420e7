"""Parameter and FLOP counts against every number of the paper's §1.7 tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from salt import cli
from salt.models import ModelSpec, build_model, model_cost

# (variant, N, classes, partitions, blocks) -> (params, TF-profiler FLOPs), as the paper's tables give them
PAPER = {
    # 1 block, p = 4: hls4ml N=16, 32, 150 (5 classes); Top N=200 and QG N=150 (1 output)
    ("transformer", 16, 5, 4, 1): (2009, 76494), ("transformer", 32, 5, 4, 1): (2009, 197326),
    ("transformer", 150, 5, 4, 1): (2009, 2479918), ("transformer", 200, 1, 4, 1): (1941, 4186161),
    ("transformer", 150, 1, 4, 1): (1941, 2479761),
    ("linformer", 16, 5, 4, 1): (2521, 59598), ("linformer", 32, 5, 4, 1): (3033, 118478),
    ("linformer", 150, 5, 4, 1): (6809, 552718), ("linformer", 200, 1, 4, 1): (8341, 736561),
    ("linformer", 150, 1, 4, 1): (6741, 552561),
    ("salt_nopartition", 16, 5, 4, 1): (2560, 79566), ("salt_nopartition", 32, 5, 4, 1): (3072, 158414),
    ("salt_nopartition", 150, 5, 4, 1): (6848, 739918), ("salt_nopartition", 200, 1, 4, 1): (8380, 986161),
    ("salt_nopartition", 150, 1, 4, 1): (6780, 739761),
    ("salt_noconv", 16, 5, 4, 1): (2137, 59598), ("salt_noconv", 32, 5, 4, 1): (2265, 118478),
    ("salt_noconv", 150, 5, 4, 1): (3225, 552718), ("salt_noconv", 200, 1, 4, 1): (3541, 736561),
    ("salt_noconv", 150, 1, 4, 1): (3157, 552561),
    ("salt", 16, 5, 4, 1): (2176, 79566), ("salt", 32, 5, 4, 1): (2304, 158414),
    ("salt", 150, 5, 4, 1): (3264, 739918), ("salt", 200, 1, 4, 1): (3580, 986161),
    ("salt", 150, 1, 4, 1): (3196, 739761),
    # partition sweep, hls4ml N=150
    ("salt", 150, 5, 1, 1): (3221, 527518), ("salt", 150, 5, 2, 1): (3230, 576718),
    ("salt", 150, 5, 8, 1): (3300, 1325518), ("salt", 150, 5, 16, 1): (3436, 3533518),
    ("salt", 150, 5, 32, 1): (3580, 12096718),
    ("linformer", 150, 5, 8, 1): (11609, 605518), ("linformer", 150, 5, 16, 1): (21209, 711118),
    # two blocks (SAL-T with heights 1..9)
    ("transformer", 150, 5, 4, 2): (3597, 4942318), ("linformer", 150, 5, 4, 2): (13197, 1087918),
    ("salt", 150, 5, 4, 2): (6239, 2095918), ("salt", 200, 1, 4, 2): (6939, 2794161),
    # early development logs: base Linformer, p = 16
    ("linformer", 16, 5, 16, 1): (4057, 76494), ("linformer", 32, 5, 16, 1): (6105, 152270),
}


@pytest.mark.parametrize("key", list(PAPER), ids=lambda k: "-".join(map(str, k)))
def test_paper_params_and_flops(key):
    variant, n, classes, partitions, blocks = key
    cost = model_cost(ModelSpec(model=variant, particles=n, classes=classes, partitions=partitions, blocks=blocks))
    assert (cost["params"], cost["flops_paper"]) == PAPER[key]
    assert cost["param_bytes"] == 4 * cost["params"]
    assert cost["flops_paper"] == sum(cost["flops_paper_breakdown"].values())
    assert cost["flops"] == sum(cost["flops_breakdown"].values())


def test_headline_numbers():
    def cost(**kw):
        return model_cost(ModelSpec(**{"classes": 5, **kw}))

    assert cost(model="salt", particles=150)["flops_paper"] == 739_918
    assert cost(model="linformer", particles=150)["flops_paper"] == 552_718
    assert cost(model="transformer", particles=150)["flops_paper"] == 2_479_918
    assert cost(model="salt", particles=200, classes=1)["flops_paper"] == 986_161
    assert cost(model="salt", particles=150, partitions=8)["flops_paper"] == 1_325_518
    assert cost(model="salt", particles=150, partitions=16)["flops_paper"] == 3_533_518


@pytest.mark.parametrize("variant, pair_hidden", [("salt", 0), ("linformer", 0), ("transformer", 0), ("salt_noconv", 0),
                                                  ("salt_nopartition", 0), ("part", 0), ("salt_pair", 0),
                                                  ("salt_pair", 6)])
@pytest.mark.parametrize("n, p, blocks, classes", [(16, 4, 1, 5), (24, 8, 2, 1), (30, 5, 3, 10)])
def test_matrix_product_flops_match_pytorch_counter(variant, pair_hidden, n, p, blocks, classes):
    """The matmul/conv part of `flops` equals what torch's FlopCounterMode sees the model do
    (on the straightforward path, with N divisible by p so no padded slot is counted)."""
    spec = ModelSpec(model=variant, particles=n, classes=classes, partitions=p, blocks=blocks, pair_hidden=pair_hidden)
    model = build_model(spec, impl="straightforward")
    with FlopCounterMode(display=False) as counter:
        model.attention_maps(torch.randn(1, n, 3))  # explicit attention: SDPA is not counted on CPU
    assert model_cost(spec)["flops_matmul"] == counter.get_total_flops()


def test_true_flops_include_what_the_paper_leaves_out():
    base = dict(particles=150, classes=5)
    salt = model_cost(ModelSpec(model="salt", **base))
    linformer = model_cost(ModelSpec(model="linformer", **base))
    noconv = model_cost(ModelSpec(model="salt_noconv", **base))
    # the paper counts Linformer and SAL-T (no conv) alike; the E/F projections differ by a factor p
    assert linformer["flops_paper"] == noconv["flops_paper"]
    assert linformer["flops_breakdown"]["ef_projection"] == 4 * noconv["flops_breakdown"]["ef_projection"]
    assert noconv["flops_breakdown"]["ef_projection"] == 2 * 2 * 150 * 16
    for cost in (salt, linformer, noconv):
        assert cost["flops"] > cost["flops_paper"]
    masked = model_cost(ModelSpec(model="salt", mask=True, **base))
    assert masked["flops"] == salt["flops"] + 2 * 150 * 16
    mean = model_cost(ModelSpec(model="salt", aggregation="mean", **base))
    assert mean["flops_paper"] == salt["flops_paper"] + 150 * 16  # TF's Mean: one per input element


def test_model_info_cli_json(capsys):
    assert cli.main(["model-info", "--model", "salt", "--particles", "150", "--classes", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["params"], out["flops_paper"]) == (3264, 739918)
    assert out["flops"] > out["flops_paper"]
    assert out["spec"]["model"] == "salt"
    assert cli.main(["model-info", "--model", "salt", "--particles", "150", "--classes", "5",
                     "--partitions", "8", "--blocks", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model = build_model(ModelSpec(model="salt", particles=150, classes=5, partitions=8, blocks=2))
    assert out["spec"]["conv_heights"] == [1, 3, 5, 7, 9]
    assert out["params"] == sum(p.numel() for p in model.parameters())


def test_model_info_cli_errors(capsys):
    assert cli.main(["model-info", "--model", "salsa", "--particles", "150", "--classes", "5"]) == 2
    assert "'salsa'" in capsys.readouterr().err
    assert cli.main(["model-info", "--model", "salt", "--particles", "150", "--classes", "5",
                     "--conv-heights", "1,x"]) == 2
    assert "--conv-heights" in capsys.readouterr().err


def test_model_info_variant_is_a_deprecated_name_of_model(capsys):
    assert cli.main(["model-info", "--variant", "salt", "--particles", "150", "--classes", "5", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["spec"]["model"] == "salt"
    assert captured.err == "salt model-info: note: --variant is deprecated; use --model\n"


def test_model_info_as_a_command():
    proc = subprocess.run([sys.executable, "-m", "salt.cli", "model-info", "--model", "transformer",
                           "--particles", "150", "--classes", "5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2,479,918" in proc.stdout and "2,009" in proc.stdout
