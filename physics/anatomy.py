"""Patient anatomy from segmentations: NIfTI label maps and DICOM SEG objects to tet meshes, one material
region per label.

A segmentation tool (3D Slicer, ITK-SNAP, TotalSegmentator) saves a label map: an integer volume where each
voxel holds the id of the structure it belongs to (0: background). ``nifti_label_volume`` reads one
(``.nii`` / ``.nii.gz``, through nibabel) with its voxel size; ``dicom_seg_label_volume`` reads a DICOM
Segmentation object (modality SEG, through pydicom: one binary frame per segment and slice) into the same
form, each voxel holding its segment number. ``labels_to_regions`` keeps the labels a scenario names and
numbers them as its material regions; ``label_map_to_mesh`` does both and meshes the result
(``physics.voxels``: 6 conforming tets per voxel).

Geometry: voxel (i, j, k) becomes the cube from (i, j, k) * spacing to (i+1, j+1, k+1) * spacing, in
metres, along the volume's own axes (x = i, y = j, z = k), with the volume's corner at the origin. The
file's affine (its placement in the scanner and any rotation) is not applied: a rehearsal scene places the
anatomy in its own coordinates, and the scenario's boxes are written in these.

``write_example_label_map`` makes the small synthetic label map the packaged ``vessel_in_parenchyma``
scenario is built from (``python -m physics.anatomy PATH`` writes it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from physics.mesh import MeshError, TetMesh
from physics.voxels import label_volume_to_mesh

# NIfTI xyzt_units spatial codes -> metres (the header says which unit its pixdim are in).
_UNIT_METRES = {"meter": 1.0, "mm": 1e-3, "micron": 1e-6}
MAX_VOXELS = 400_000  # labelled voxels meshed at most (6 tets each): a rehearsal mesh, not a full CT
MAX_LABEL = 65535


class AnatomyError(MeshError):
    """A segmentation file that cannot become a mesh, with the reason."""


def nifti_label_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(labels, spacing): the integer label array [i, j, k] of a NIfTI file and its voxel size in metres."""
    import nibabel  # imported here: only scenarios with NIfTI anatomy need it

    path = Path(path)
    try:
        image = nibabel.load(str(path))
    except FileNotFoundError:
        raise AnatomyError(f"{path}: no such file") from None
    except Exception as exc:  # nibabel raises many kinds for a file that is not NIfTI
        raise AnatomyError(f"{path}: not a NIfTI label map: {exc}") from None
    data = np.asanyarray(image.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AnatomyError(f"{path}: a label map is a 3D volume, this one has shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not (np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))):
            raise AnatomyError(f"{path}: label values must be whole numbers (is this a scan, not a segmentation?)")
        data = data.astype(np.int64)
    if data.size and (data.min() < 0 or data.max() > MAX_LABEL):
        raise AnatomyError(f"{path}: label values must be in [0, {MAX_LABEL}]")
    unit = image.header.get_xyzt_units()[0]
    scale = _UNIT_METRES.get(unit, 1e-3)  # "unknown": NIfTI tools write millimetres
    zooms = tuple(float(z) * scale for z in image.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise AnatomyError(f"{path}: voxel sizes must be positive, got {zooms}")
    return data.astype(np.int64, copy=False), (zooms[0], zooms[1], zooms[2])


def labels_to_regions(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """An array of region + 1 per voxel for the labels in ``mapping`` (label -> region), 0 elsewhere:
    labels the scenario does not name are background, as is label 0."""
    labels = np.asarray(labels)
    lut = np.zeros(MAX_LABEL + 1, dtype=np.int64)
    for label, region in mapping.items():
        if not (1 <= int(label) <= MAX_LABEL) or int(region) < 0:
            raise AnatomyError(f"label {label} -> region {region}: labels are 1..{MAX_LABEL}, regions 0, 1, ...")
        lut[int(label)] = int(region) + 1
    return lut[np.clip(labels, 0, MAX_LABEL)]


def label_map_to_mesh(labels: np.ndarray, spacing: tuple[float, float, float], mapping: Mapping[int, int]) -> TetMesh:
    """The tet mesh of the labels in ``mapping``; each tet's region is its label's (``mapping[label]``)."""
    regions_plus_one = labels_to_regions(labels, mapping)
    in_volume = set(np.unique(labels).tolist())
    missing = sorted(int(label) for label in mapping if int(label) not in in_volume)
    if len(missing) == len(mapping):
        raise AnatomyError(f"none of the labels {sorted(mapping)} is in the volume (it holds {_labels_in(labels)})")
    if missing:
        raise AnatomyError(f"labels {missing} are not in the volume (it holds {_labels_in(labels)})")
    voxels = int(np.count_nonzero(regions_plus_one))
    if voxels > MAX_VOXELS:
        raise AnatomyError(f"{voxels} labelled voxels is more than {MAX_VOXELS}: crop or downsample the label map")
    mesh, values = label_volume_to_mesh(regions_plus_one, spacing=spacing)
    return TetMesh(mesh.vertices, mesh.tets, values[mesh.regions] - 1)


def _labels_in(labels: np.ndarray) -> str:
    found = np.unique(labels)
    found = found[found != 0]
    shown = ", ".join(str(v) for v in found[:12]) + (", ..." if found.size > 12 else "")
    return shown or "no label"


def nifti_to_mesh(path: str | Path, mapping: Mapping[int, int]) -> TetMesh:
    """Read a NIfTI label map and mesh the labels ``mapping`` names (see the module doc)."""
    return _meshed(path, nifti_label_volume, mapping)


def dicom_seg_to_mesh(path: str | Path, mapping: Mapping[int, int]) -> TetMesh:
    """Read a DICOM SEG object and mesh the segments ``mapping`` names (segment number -> region)."""
    return _meshed(path, dicom_seg_label_volume, mapping)


def _meshed(path: str | Path, read, mapping: Mapping[int, int]) -> TetMesh:
    labels, spacing = read(path)
    try:
        return label_map_to_mesh(labels, spacing, mapping)
    except AnatomyError as exc:
        raise AnatomyError(f"{Path(path).name}: {exc}") from None


SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # the Segmentation Storage SOP class


def dicom_seg_label_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(labels, spacing): a DICOM SEG object as a label array [i, j, k] (i: column, j: row, k: slice along
    the plane's normal) holding each voxel's segment number (0: none; where segments overlap, the higher
    number), and the voxel size in metres (pixel spacing and the distance between slices)."""
    import pydicom  # imported here: only scenarios with DICOM anatomy need it
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except FileNotFoundError:
        raise AnatomyError(f"{path}: no such file") from None
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise AnatomyError(f"{path}: not a DICOM file: {exc}") from None
    if ds.get("Modality") != "SEG" or "PerFrameFunctionalGroupsSequence" not in ds:
        raise AnatomyError(f"{path}: not a DICOM segmentation (modality {ds.get('Modality')!r}, expected 'SEG')")
    try:
        frames = np.asarray(ds.pixel_array)
        if frames.ndim == 2:
            frames = frames[None]
        shared = ds.SharedFunctionalGroupsSequence[0]
        row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
        orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
        per_frame = [
            (
                int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                np.array(group.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64),
            )
            for group in ds.PerFrameFunctionalGroupsSequence
        ]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise AnatomyError(f"{path}: an incomplete DICOM segmentation: {type(exc).__name__}: {exc}") from None
    if len(per_frame) != frames.shape[0]:
        raise AnatomyError(f"{path}: {frames.shape[0]} frames but {len(per_frame)} per-frame descriptions")
    if ds.get("SegmentationType", "BINARY") == "FRACTIONAL":  # stored 0..MaximumFractionalValue: over half
        frames = frames > int(ds.get("MaximumFractionalValue", 255)) / 2
    normal = np.cross(orientation[:3], orientation[3:])
    depth = np.array([float(position @ normal) for _, position in per_frame])
    slices = np.unique(np.round(depth, 4))
    gaps = np.diff(slices)
    if gaps.size and not np.allclose(gaps, gaps[0], rtol=1e-3, atol=1e-4):
        raise AnatomyError(f"{path}: its slices are not evenly spaced ({sorted(set(np.round(gaps, 3)))} mm)")
    slice_mm = float(gaps[0]) if gaps.size else float(shared.PixelMeasuresSequence[0].get("SliceThickness", 1.0))
    rows, cols = frames.shape[1:]
    labels = np.zeros((cols, rows, slices.size), dtype=np.int64)
    for (segment, _), d, frame in sorted(zip(per_frame, depth, frames, strict=True), key=lambda item: item[0][0]):
        k = int(np.searchsorted(slices, round(d, 4)))
        plane = labels[:, :, k]
        plane[frame.T.astype(bool)] = segment
    spacing = (col_mm * 1e-3, row_mm * 1e-3, slice_mm * 1e-3)
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise AnatomyError(f"{path}: voxel sizes must be positive, got {spacing}")
    return labels, spacing


# --- the packaged example ---------------------------------------------------------------------------------

EXAMPLE_SHAPE = (12, 5, 8)  # voxels along x, y, z
EXAMPLE_SPACING_MM = 5.0  # a 60 x 25 x 40 mm block: 480 voxels, 2880 tets
EXAMPLE_LABELS = {"parenchyma": 1, "vessel": 2, "capsule": 3}


def example_label_map() -> np.ndarray:
    """A small synthetic segmentation: a slab of parenchyma (label 1) with a vessel (label 2) running
    through it along x, under a capsule one voxel thick on top (label 3)."""
    _, ny, nz = EXAMPLE_SHAPE
    labels = np.full(EXAMPLE_SHAPE, EXAMPLE_LABELS["parenchyma"], dtype=np.uint8)
    labels[:, ny - 1, :] = EXAMPLE_LABELS["capsule"]
    j, k = np.meshgrid(np.arange(ny), np.arange(nz), indexing="ij")
    vessel = (j - 1.5) ** 2 + (k - (nz - 1) / 2) ** 2 <= 0.6  # 2 x 2 voxels, one voxel above the bottom
    labels[:, vessel] = EXAMPLE_LABELS["vessel"]
    return labels


def write_example_label_map(path: str | Path) -> Path:
    """Write ``example_label_map`` as NIfTI (uint8 labels, millimetre voxels, identity orientation)."""
    import nibabel

    spacing = EXAMPLE_SPACING_MM
    affine = np.diag([spacing, spacing, spacing, 1.0])
    image = nibabel.Nifti1Image(example_label_map(), affine)
    image.header.set_xyzt_units("mm")
    image.header.set_intent("label")
    path = Path(path)
    nibabel.save(image, str(path))
    return path


def write_example_dicom_seg(path: str | Path) -> Path:
    """Write ``example_label_map`` as a DICOM SEG object: one binary segment per label, one frame per segment
    and slice (axial planes, 5 mm pixels and slices); a test's stand-in for a segmentation tool's export."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    labels = example_label_map()  # [i = column, j = row, k = slice]
    spacing = EXAMPLE_SPACING_MM
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SEG_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SEG_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SegmentationType = "SEG", "BINARY"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = labels.shape[1], labels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    segments = []
    for name, value in EXAMPLE_LABELS.items():
        segment = Dataset()
        segment.SegmentNumber, segment.SegmentLabel, segment.SegmentAlgorithmType = value, name, "MANUAL"
        segments.append(segment)
    ds.SegmentSequence = Sequence(segments)
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [spacing, spacing], spacing
    plane.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, groups = [], []
    for value in EXAMPLE_LABELS.values():
        for k in range(labels.shape[2]):
            frames.append((labels[:, :, k] == value).T.astype(np.uint8))  # rows x columns
            group, ident, position = Dataset(), Dataset(), Dataset()
            ident.ReferencedSegmentNumber = value
            position.ImagePositionPatient = [0.0, 0.0, k * spacing]
            group.SegmentIdentificationSequence, group.PlanePositionSequence = Sequence([ident]), Sequence([position])
            groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = pack_bits(np.stack(frames))
    path = Path(path)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "vessel_in_parenchyma.nii.gz")
    print(write_example_label_map(target))
