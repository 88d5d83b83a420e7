"""ModelNet10: OFF parsing, surface sampling, normalisation, on a zip in the real layout."""

from __future__ import annotations

import numpy as np
import pytest

from formats import box_mesh, tetra_mesh, write_modelnet10_zip, write_off
from salt.data.archive import extract
from salt.data.kinematics import sort_key
from salt.data.record import RecordError
from salt.data.sources import modelnet10 as mn


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mn")
    z = write_modelnet10_zip(tmp / "ModelNet10.zip", classes=("chair", "bathtub", "sofa"), n_train=3, n_test=2)
    extract(z, tmp / "raw")
    return tmp / "raw" / "ModelNet10"


def test_glued_header_and_quads(tmp_path):
    v, f = box_mesh((2.0, 3.0, 4.0))
    glued = write_off(tmp_path / "glued.off", v, f, glued=True)
    assert glued.read_text().startswith("OFF8 6 0\n")
    vertices, tris = mn.read_off(glued)
    np.testing.assert_allclose(vertices, v)
    assert tris.shape == (12, 3)  # 6 quads -> 12 triangles
    area = 0.5 * np.linalg.norm(np.cross(vertices[tris[:, 1]] - vertices[tris[:, 0]],
                                         vertices[tris[:, 2]] - vertices[tris[:, 0]]), axis=1).sum()
    assert area == pytest.approx(2 * (2 * 3 + 2 * 4 + 3 * 4))  # the quads are covered exactly
    split = write_off(tmp_path / "split.off", v, f, glued=False)
    assert np.array_equal(mn.read_off(split)[1], tris)


def test_mixed_polygons_comments_and_colours(tmp_path):
    text = ("OFF\n# a comment\n5 3 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 0.5 1\n"
            "3 0 1 4 255 0 0\n4 0 1 2 3\n5 0 1 2 3 4\n")
    (tmp_path / "m.off").write_text(text)
    _, tris = mn.read_off(tmp_path / "m.off")
    assert tris.tolist() == [[0, 1, 4], [0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3], [0, 3, 4]]


@pytest.mark.parametrize("text, message", [
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated"),
    ("OFF\n3 1 0\n0 0 0\n1 0 x\n0 1 0\n3 0 1 2\n", "line 4"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "outside 0..2"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "line 6"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n\n0 1 0\n3 0 1 z\n", "line 7"),
    ("PLY\n3 1 0\n", "OFF' header"),
    ("OFF\n3 1 0\n0 0 0\n0 0 0\n0 0 0\n3 0 1 2\n", "no surface area"),
])
def test_bad_off_files_name_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.off").write_text(text)
    with pytest.raises(RecordError, match="bad.off") as err:
        _read_one(tmp_path / "bad.off")
    assert message in str(err.value)


def _read_one(path):
    vertices, tris = mn.read_off(path)
    return mn.sample_surface(vertices, tris, 16, np.random.default_rng(0), source=path)


def test_area_weighted_sampling_is_uniform_on_the_surface():
    v, f = box_mesh((10.0, 1.0, 1.0))  # the four long faces hold 40 of the 42 area units
    vertices, tris = v, np.array([[q[0], q[i], q[i + 1]] for q in f for i in (1, 2)])
    pts = mn.sample_surface(vertices, tris, 20_000, np.random.default_rng(1))
    on_end_caps = np.isclose(pts[:, 0], 0) | np.isclose(pts[:, 0], 10)
    assert on_end_caps.mean() == pytest.approx(2 / 42, abs=0.01)
    # every sample lies on the surface of the box
    on_face = (np.isclose(pts, 0) | np.isclose(pts, [10, 1, 1])).any(axis=1)
    assert on_face.all()


def test_folder_record(root):
    assert mn.class_names(root) == ("bathtub", "chair", "sofa")  # sorted, __MACOSX ignored
    rec = mn.read(root / "chair" / "train", num_points=256, seed=7)
    assert rec.kind == "points" and len(rec) == 3 and set(rec.labels) == {1}
    assert rec.extra["files"] == ["chair_0001.off", "chair_0002.off", "chair_0003.off"]
    xyz = np.stack([rec.particles[c].to_numpy() for c in "xyz"], axis=-1)  # (3, 256, 3)
    np.testing.assert_allclose(xyz.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=-1).max(axis=1), 1, rtol=1e-5)
    assert np.all(rec.jets["n_particles"] == 256) and np.all(rec.jets["scale"] > 0)
    # seeded per file: the same points in a different reading unit or order
    again = mn.read(root / "chair" / "train" / "chair_0002.off", num_points=256, seed=7)
    assert again.class_names == rec.class_names and again.labels.tolist() == [1]
    np.testing.assert_array_equal(again.particles.x.to_numpy()[0], xyz[1, :, 0])
    other = mn.read(root / "chair" / "train", num_points=256, seed=8)
    assert not np.array_equal(other.particles.x.to_numpy(), xyz[..., 0])


def test_iteration_and_sort_key(root):
    recs = list(mn.iter_records(root / "sofa" / "train", step=2, num_points=64))
    assert [len(r) for r in recs] == [2, 1] and [r.entry_start for r in recs] == [0, 2]
    key = sort_key(recs[0], "radius").to_numpy()
    assert key.shape == (2, 64) and key.max() == pytest.approx(1.0, rel=1e-6) and key.min() >= 0


def test_wrong_class_or_empty_folder(root, tmp_path):
    with pytest.raises(RecordError, match="not one of"):
        mn.read(root / "chair" / "train", classes=("bed", "desk"))
    (tmp_path / "x" / "empty" / "train").mkdir(parents=True)
    with pytest.raises(RecordError, match="no .off files"):
        mn.read(tmp_path / "x" / "empty" / "train")


def test_tetra_is_sampled_on_its_faces():
    v, f = tetra_mesh(2.0)
    pts = mn.sample_surface(v, np.array(f), 500, np.random.default_rng(0))
    on_face = np.isclose(pts, 0).any(axis=1) | np.isclose(pts.sum(axis=1), 2.0)
    assert on_face.all()
