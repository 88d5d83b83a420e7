"""In-memory and streaming loaders over real shards: coverage, order, sharding, memory bound."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jetshards import write_dataset
from salt.data.loader import (ShardStream, load_split, resolve_loader, split_chunks, split_nbytes,
                              stream_loader)
from salt.data.shards import ShardError, load_manifest

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    path = write_dataset(root, n_train=700, n_val=100, shards_per_split=3, chunk_jets=32, seed=5)
    return load_manifest(path)


def stream(manifest, batch=50, **kw):
    kw = {"shuffle": True, "seed": 1, "buffer_jets": 128} | kw
    return ShardStream(split_chunks(manifest, "train"), manifest["normalisation"], batch, **kw)


def rows(batches):
    """Each jet as bytes of (label, normalised particles), for multiset comparisons."""
    out = []
    for x, m, y in batches:
        assert x.dtype == torch.float32 and m.dtype == torch.bool and y.dtype == torch.int64
        out += [bytes(np.int64(yy).tobytes()) + xx.numpy().tobytes() for xx, yy in zip(x, y)]
    return out


def test_stream_yields_every_jet_once_normalised_like_memory(manifest):
    ref = load_split(manifest, "train")
    expected = sorted(rows([(ref.x, ref.mask, ref.y)]))
    got = rows(stream(manifest))
    assert len(got) == 700 and sorted(got) == expected


def test_chunks_follow_the_hdf5_chunking_and_cover_each_shard(manifest):
    chunks = split_chunks(manifest, "train")
    assert all(len(c) <= 32 for c in chunks) and sum(len(c) for c in chunks) == 700
    assert len({c.path for c in chunks}) == 3
    assert sum(len(c) for c in split_chunks(manifest, "train", max_jets=100)) == 100


def test_order_is_a_function_of_seed_and_epoch(manifest):
    a, b = stream(manifest), stream(manifest)
    first = rows(a)
    assert rows(b) == first                      # same seed and epoch: same batches
    a.set_epoch(1)
    assert rows(a) != first and sorted(rows(a)) == sorted(first)
    assert rows(stream(manifest, seed=2)) != first


def test_shuffle_interleaves_shards_and_mixes_within_the_buffer(manifest):
    s = stream(manifest)
    order = [c.path for c in s.reader_chunks(0, 1)]
    switches = sum(p != q for p, q in zip(order, order[1:]))
    assert switches > len(order) // 3             # consecutive reads come from different shards
    labels = torch.cat([y for _, _, y in s])
    plain = torch.cat([y for _, _, y in stream(manifest, shuffle=False)])
    assert not torch.equal(labels, plain)


def test_memory_is_bounded_by_the_buffer(manifest):
    s = stream(manifest, batch=20, buffer_jets=64)
    n = sum(len(y) for _, _, y in s)
    assert n == 700
    assert s.peak_buffer_jets <= 64 + 32          # the buffer plus at most one chunk


def test_batches_are_full_except_the_last(manifest):
    sizes = [len(y) for _, _, y in stream(manifest, batch=64)]
    assert all(s == 64 for s in sizes[:-1]) and 0 < sizes[-1] <= 64 and sum(sizes) == 700


def test_ranks_read_disjoint_chunks_that_cover_the_split(manifest):
    parts = [rows(stream(manifest, rank=r, world=2)) for r in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(rows(stream(manifest)))


def test_dataloader_workers_are_reproducible_and_complete(manifest):
    s = stream(manifest)
    s.set_epoch(3)
    first = rows(stream_loader(s, workers=2))
    assert rows(stream_loader(s, workers=2)) == first
    assert sorted(first) == sorted(rows(stream(manifest)))


def test_validation_stream_is_in_file_order(manifest):
    ref = load_split(manifest, "val")
    s = ShardStream(split_chunks(manifest, "val"), manifest["normalisation"], 30, shuffle=False)
    assert rows(s) == rows([(ref.x, ref.mask, ref.y)])


def test_auto_streams_only_what_exceeds_the_budget(manifest):
    nbytes = split_nbytes(manifest, "train")
    assert nbytes == 700 * (8 * (4 * 3 + 1) + 16)
    assert resolve_loader("auto", manifest, "train", budget_gb=1.0) == "memory"
    assert resolve_loader("auto", manifest, "train", budget_gb=nbytes / 2**30 / 2) == "stream"
    assert resolve_loader("stream", manifest, "train", budget_gb=1.0) == "stream"
    with pytest.raises(ValueError, match="train.loader"):
        resolve_loader("disk", manifest, "train", budget_gb=1.0)


def test_manifest_out_of_step_with_a_shard_names_the_file(manifest, tmp_path):
    bad = json.loads(json.dumps(manifest))
    bad["splits"]["train"]["shards"][1]["n_jets"] += 1
    with pytest.raises(ShardError, match=r"s001\.h5.*manifest lists"):
        split_chunks(bad, "train")
    bad["splits"]["train"]["shards"][1]["path"] = str(tmp_path / "missing.h5")
    with pytest.raises(ShardError, match="missing.h5"):
        split_chunks(bad, "train")
