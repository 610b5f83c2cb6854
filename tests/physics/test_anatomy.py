"""NIfTI label maps to tet meshes: one region per named label, the rest background; clear errors."""

from pathlib import Path

import nibabel
import numpy as np
import pytest

from physics.anatomy import (
    EXAMPLE_LABELS,
    AnatomyError,
    example_label_map,
    label_map_to_mesh,
    nifti_label_volume,
    nifti_to_mesh,
    write_example_label_map,
)

SHIPPED = Path(__file__).resolve().parents[2] / "rehearsal" / "scenarios" / "anatomy" / "vessel_in_parenchyma.nii.gz"


def _save(path, data, zooms=(2.0, 2.0, 2.0), unit="mm"):
    image = nibabel.Nifti1Image(data, np.diag([*zooms, 1.0]))
    image.header.set_xyzt_units(unit)
    nibabel.save(image, str(path))
    return path


def test_the_shipped_example_is_what_the_project_makes(tmp_path):
    made = write_example_label_map(tmp_path / "made.nii.gz")
    shipped, spacing = nifti_label_volume(SHIPPED)
    again, again_spacing = nifti_label_volume(made)
    assert np.array_equal(shipped, again) and np.array_equal(shipped, example_label_map())
    assert spacing == again_spacing == (0.005, 0.005, 0.005)
    assert set(np.unique(shipped)) == set(EXAMPLE_LABELS.values())


def test_each_named_label_becomes_its_region_and_the_rest_is_background(tmp_path):
    labels = np.zeros((4, 3, 2), np.int16)
    labels[0:2] = 7  # 12 voxels
    labels[2, :, :] = 9  # 6 voxels
    labels[3, 0, 0] = 4  # not named: background
    path = _save(tmp_path / "seg.nii", labels, zooms=(1.0, 2.0, 3.0))
    mesh = nifti_to_mesh(path, {9: 0, 7: 1})
    assert np.bincount(mesh.regions).tolist() == [6 * 6, 12 * 6]
    assert np.allclose(mesh.vertices.max(axis=0), [0.003, 0.006, 0.006])  # mm -> m, voxel axes
    assert np.allclose(mesh.vertices.min(axis=0), 0.0)


def test_voxel_units_are_read_from_the_header(tmp_path):
    labels = np.ones((2, 2, 2), np.uint8)
    _, spacing = nifti_label_volume(_save(tmp_path / "m.nii", labels, zooms=(0.01, 0.01, 0.02), unit="meter"))
    assert spacing == pytest.approx((0.01, 0.01, 0.02))


@pytest.mark.parametrize(
    ("data", "mapping", "message"),
    [
        (np.ones((2, 2, 2, 2), np.uint8), {1: 0}, r"a label map is a 3D volume, this one has shape \(2, 2, 2, 2\)"),
        (np.full((2, 2, 2), 0.5, np.float32), {1: 0}, "label values must be whole numbers"),
        (np.ones((2, 2, 2), np.uint8), {5: 0}, r"none of the labels \[5\] is in the volume \(it holds 1\)"),
        (np.ones((2, 2, 2), np.uint8), {1: 0, 5: 1}, r"labels \[5\] are not in the volume \(it holds 1\)"),
    ],
)
def test_bad_label_maps_say_why(tmp_path, data, mapping, message):
    path = _save(tmp_path / "bad.nii", data)
    with pytest.raises(AnatomyError, match=message):
        nifti_to_mesh(path, mapping)


def test_a_file_that_is_not_nifti_or_not_there(tmp_path):
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(AnatomyError, match=r"junk\.nii: not a NIfTI label map"):
        nifti_label_volume(junk)
    with pytest.raises(AnatomyError, match=r"gone\.nii: no such file"):
        nifti_label_volume(tmp_path / "gone.nii")


def test_too_many_voxels_is_refused_before_meshing():
    with pytest.raises(AnatomyError, match="crop or downsample"):
        label_map_to_mesh(np.ones((80, 80, 80), np.uint8), (0.001, 0.001, 0.001), {1: 0})


def test_a_dicom_seg_reads_as_the_same_label_map(tmp_path):
    from physics.anatomy import dicom_seg_label_volume, dicom_seg_to_mesh, write_example_dicom_seg

    path = write_example_dicom_seg(tmp_path / "seg.dcm")
    labels, spacing = dicom_seg_label_volume(path)
    assert np.array_equal(labels, example_label_map()) and spacing == pytest.approx((0.005, 0.005, 0.005))
    from_dicom = dicom_seg_to_mesh(path, {1: 0, 2: 1})
    from_nifti = nifti_to_mesh(SHIPPED, {1: 0, 2: 1})
    assert np.array_equal(from_dicom.tets, from_nifti.tets) and np.array_equal(from_dicom.regions, from_nifti.regions)
    assert np.allclose(from_dicom.vertices, from_nifti.vertices)


def test_a_dicom_file_that_is_not_a_segmentation(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from physics.anatomy import dicom_seg_label_volume

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    pydicom.dcmwrite(str(tmp_path / "ct.dcm"), ds, enforce_file_format=True)
    with pytest.raises(AnatomyError, match=r"ct\.dcm: not a DICOM segmentation \(modality 'CT', expected 'SEG'\)"):
        dicom_seg_label_volume(tmp_path / "ct.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"junk")
    with pytest.raises(AnatomyError, match=r"junk\.dcm: not a DICOM file"):
        dicom_seg_label_volume(tmp_path / "junk.dcm")
