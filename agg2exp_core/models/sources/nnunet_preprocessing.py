"""nnU-Net v2's own preprocessing and export path, on a scan that is already read.

``image`` hands the scan to nnU-Net as its ``SimpleITKIO`` would (array ``(z, y, x)`` of
the voxels as stored, spacing reversed) and runs the configuration's preprocessor
(``run_case_npy``: transpose -> crop to non-zero -> normalisation -> resampling). The
result lives on nnU-Net's grid G (its axis order, cropped, at the target spacing); its
affine is composed from the same steps (skimage's and nnU-Net's resampling map voxel
``g`` to ``(g + 0.5) · n_in / n_out - 0.5``), so outputs on G stay world-aligned.
``labels`` maps label maps and masks onto G with nnU-Net's own steps for segmentations
(``resampling_fn_seg``); ``to_scan`` takes logits or attributions on G back to the scan's
voxels by nnU-Net's export path (``resampling_fn_probabilities``,
``insert_crop_into_image``, ``transpose_backward``), as
``convert_predicted_logits_to_segmentation_with_correct_shape`` does.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch

from agg2exp_core.io.preprocessing import GridMemo, Intensity, IntensityViews


@dataclass(frozen=True)
class _Grid:
    """What nnU-Net's preprocessing did to one scan (its properties) and G's affine."""

    properties: dict
    affine: np.ndarray
    shape: tuple[int, ...]


@dataclass
class NnUNetPreprocessing(IntensityViews):
    plans_manager: object
    configuration_manager: object
    dataset_json: dict
    memo: GridMemo = field(default_factory=GridMemo, repr=False)

    @property
    def intensity(self) -> Intensity:
        scheme = self.configuration_manager.normalization_schemes[0]
        props = self.plans_manager.foreground_intensity_properties_per_channel.get("0", {})
        if scheme == "CTNormalization":
            return Intensity("ct", float(props["percentile_00_5"]), float(props["percentile_99_5"]),
                             float(props["mean"]), max(float(props["std"]), 1e-8))
        return Intensity("none") if scheme == "NoNormalization" else Intensity("image")

    @property
    def target_spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.configuration_manager.spacing)

    @property
    def transpose_forward(self) -> list[int]:
        return list(self.plans_manager.transpose_forward)

    def image(self, volume: np.ndarray, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        data, spacing = _as_simpleitk(volume, affine)
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        with contextlib.redirect_stdout(io.StringIO()):
            out, _, props = preprocessor.run_case_npy(data, None, {"spacing": spacing}, self.plans_manager,
                                                      self.configuration_manager, self.dataset_json)
        grid = _Grid(props, self._grid_affine(affine, props, out.shape[1:]), tuple(out.shape[1:]))
        self.memo.put(volume, affine, grid)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)), grid.affine

    def labels(self, volume: np.ndarray, affine: np.ndarray) -> torch.Tensor:
        from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice

        grid = self.memo.get(volume, affine)
        seg, _ = _as_simpleitk(np.rint(volume), affine)
        seg = seg.transpose([0, *[i + 1 for i in self.transpose_forward]])
        seg = seg[(slice(None), *bounding_box_to_slice(grid.properties["bbox_used_for_cropping"]))]
        spacing = [grid.properties["spacing"][i] for i in self.transpose_forward]
        out = self.configuration_manager.resampling_fn_seg(seg.astype(np.int16), grid.shape, spacing,
                                                           self.configuration_manager.spacing)
        return torch.from_numpy(np.asarray(out[0])).round().long()

    def to_scan(self, array: np.ndarray | torch.Tensor, volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """``[k, *G]`` (logits, attributions) -> ``[k, *scan]`` on the scan's voxels, nnU-Net's export path."""
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        grid = self.memo.get(volume, affine)
        props = grid.properties
        array = torch.as_tensor(array).float()
        spacing = [props["spacing"][i] for i in self.transpose_forward]
        resampled = self.configuration_manager.resampling_fn_probabilities(
            array, props["shape_after_cropping_and_before_resampling"], self.configuration_manager.spacing, spacing)
        resampled = np.asarray(torch.as_tensor(resampled).numpy(), dtype=np.float32)
        full = np.zeros((array.shape[0], *props["shape_before_cropping"]), dtype=np.float32)
        full = insert_crop_into_image(full, resampled, props["bbox_used_for_cropping"])
        full = full.transpose([0, *[i + 1 for i in self.plans_manager.transpose_backward]])
        return full.transpose(0, 3, 2, 1)  # SimpleITK's (z, y, x) back to the scan's voxel order

    def to_dict(self) -> dict:
        cm = self.configuration_manager
        return {"kind": "nnunet", "orientation": "as stored (SimpleITK axis order)",
                "transpose_forward": self.transpose_forward, "crop": "non-zero bounding box",
                "spacing": [float(s) for s in cm.spacing], "normalization": cm.normalization_schemes[0],
                "intensity": self.intensity.to_dict(), "resampling": cm.configuration.get("resampling_fn_data")}

    def _grid_affine(self, affine: np.ndarray, props: dict, shape: tuple[int, ...]) -> np.ndarray:
        """Voxel of G -> world: resampling, crop offset, transpose, SimpleITK's reversed axes, scan affine."""
        cropped = np.asarray(props["shape_after_cropping_and_before_resampling"], dtype=np.float64)
        scale = cropped / np.asarray(shape, dtype=np.float64)
        resample = np.diag([*scale, 1.0])
        resample[:3, 3] = 0.5 * scale - 0.5
        crop = np.eye(4)
        crop[:3, 3] = [b[0] for b in props["bbox_used_for_cropping"]]
        transpose = np.zeros((4, 4))
        for d, source in enumerate(self.transpose_forward):
            transpose[source, d] = 1.0
        transpose[3, 3] = 1.0
        reverse = np.zeros((4, 4))
        reverse[[0, 1, 2, 3], [2, 1, 0, 3]] = 1.0
        return np.asarray(affine, dtype=np.float64) @ reverse @ transpose @ crop @ resample


def _as_simpleitk(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """``(1, z, y, x)`` float32 array and ``(z, y, x)`` spacing, as nnU-Net's SimpleITKIO reads a scan."""
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    data = np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0))[None]
    return data, [float(s) for s in spacing[::-1]]
