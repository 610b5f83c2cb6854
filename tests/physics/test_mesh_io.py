"""Mesh import/export through meshio, and our OBJ surface writer."""

import meshio
import numpy as np
import pytest

from physics.mesh import MeshError, TetMesh, signed_volumes
from physics.mesh_io import load_tet_mesh, save_tet_mesh, write_surface
from physics.procedural import tissue_block
from physics.surface import boundary_triangles


def _two_region_block() -> TetMesh:
    mesh = tissue_block(size=(0.02, 0.01, 0.01), cells=(2, 1, 1))
    x = mesh.vertices[mesh.tets].mean(axis=1)[:, 0]
    return TetMesh(mesh.vertices, mesh.tets, (x > 0).astype(np.int32))


def _assert_same(a: TetMesh, b: TetMesh) -> None:
    assert np.allclose(a.vertices, b.vertices)
    assert np.array_equal(a.tets, b.tets)
    assert np.array_equal(a.regions, b.regions)


@pytest.mark.parametrize("name", ["block.vtu", "block.msh", "block.mesh"])
def test_round_trip_preserves_vertices_tets_and_regions(tmp_path, name):
    mesh = _two_region_block()
    save_tet_mesh(tmp_path / name, mesh, region_ids=np.array([4, 9]))
    loaded, ids = load_tet_mesh(tmp_path / name)
    _assert_same(mesh, loaded)
    assert ids.tolist() == [4, 9]


def test_gmsh_written_by_meshio_uses_physical_tags_and_ignores_surfaces(tmp_path):
    mesh = _two_region_block()
    tris = boundary_triangles(mesh.tets)
    physical = np.where(mesh.regions == 1, 20, 10)
    raw = meshio.Mesh(
        mesh.vertices,
        [("triangle", tris), ("tetra", mesh.tets)],
        cell_data={
            "gmsh:physical": [np.full(len(tris), 99), physical],
            "gmsh:geometrical": [np.full(len(tris), 1), np.full(mesh.n_tets, 7)],
        },
    )
    path = tmp_path / "raw.msh"
    meshio.write(path, raw, file_format="gmsh22")
    loaded, ids = load_tet_mesh(path)
    _assert_same(mesh, loaded)
    assert ids.tolist() == [10, 20]


def test_vtu_with_flipped_tets_unused_points_and_other_cell_data(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 5, 5], [1, 1, 1]], dtype=float)
    tets = np.array([[0, 2, 1, 3], [1, 2, 3, 5]])  # the first is negatively oriented
    raw = meshio.Mesh(v, [("tetra", tets)], cell_data={"tissue": [np.array([3, 3])], "temp": [np.array([1.5, 2])]})
    meshio.write(tmp_path / "m.vtu", raw)
    loaded, ids = load_tet_mesh(tmp_path / "m.vtu")
    assert loaded.n_vertices == 5  # point 4 was unused
    assert np.all(signed_volumes(loaded.vertices, loaded.tets) > 0)
    assert loaded.regions.tolist() == [0, 0] and ids.tolist() == [3]


def test_mesh_without_region_data_is_all_region_zero(tmp_path):
    mesh = tissue_block(cells=(1, 1, 1))
    meshio.write(tmp_path / "plain.vtu", meshio.Mesh(mesh.vertices, [("tetra", mesh.tets)]))
    loaded, ids = load_tet_mesh(tmp_path / "plain.vtu")
    assert np.all(loaded.regions == 0) and ids.tolist() == [0]


def test_file_without_tets_raises(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
    meshio.write(tmp_path / "tri.vtu", meshio.Mesh(v, [("triangle", np.array([[0, 1, 2]]))]))
    with pytest.raises(MeshError, match="no tetrahedra"):
        load_tet_mesh(tmp_path / "tri.vtu")


def test_missing_unknown_and_degenerate_files_raise(tmp_path):
    with pytest.raises(MeshError, match=r"missing\.vtu"):
        load_tet_mesh(tmp_path / "missing.vtu")
    (tmp_path / "junk.xyz123").write_text("hello")
    with pytest.raises(MeshError, match=r"junk\.xyz123"):
        load_tet_mesh(tmp_path / "junk.xyz123")
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=float)  # flat tet
    meshio.write(tmp_path / "flat.vtu", meshio.Mesh(v, [("tetra", np.array([[0, 1, 2, 3]]))]))
    with pytest.raises(MeshError, match="degenerate"):
        load_tet_mesh(tmp_path / "flat.vtu")


def test_obj_surface_parses_back(tmp_path):
    mesh = tissue_block(cells=(2, 1, 1))
    tris = boundary_triangles(mesh.tets)
    path = tmp_path / "s.obj"
    write_surface(path, mesh.vertices, tris)
    lines = path.read_text().splitlines()
    verts = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    faces = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    assert np.allclose(verts, mesh.vertices)
    assert np.array_equal(faces - 1, tris)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # meshio's STL reader
@pytest.mark.parametrize("name", ["s.vtu", "s.ply", "s.stl"])
def test_meshio_surface_formats(tmp_path, name):
    mesh = tissue_block(cells=(1, 1, 1))
    tris = boundary_triangles(mesh.tets)
    write_surface(tmp_path / name, mesh.vertices, tris)
    back = meshio.read(tmp_path / name)
    assert sum(len(c.data) for c in back.cells if c.type == "triangle") == 12


def test_write_surface_rejects_bad_input(tmp_path):
    v = np.zeros((3, 3))
    with pytest.raises(MeshError, match="unknown extension"):
        write_surface(tmp_path / "s.nope", v, np.array([[0, 1, 2]]))
    with pytest.raises(MeshError, match="indices"):
        write_surface(tmp_path / "s.obj", v, np.array([[0, 1, 3]]))
    with pytest.raises(MeshError, match="finite"):
        write_surface(tmp_path / "s.obj", np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
