"""Tiny real foreign model folders, written with the real libraries (nothing downloaded).

`write_bundle`: a MONAI bundle (configs/metadata.json with channel_def, configs/inference.json
with a small UNet `network_def`, Spacingd and ScaleIntensityRanged in `preprocessing`, a
SlidingWindowInferer; models/model.pt). `write_nnunet_folder`: an nnU-Net v2 trained-model
folder whose plans name a tiny `dynamic_network_architectures` PlainConvUNet (InstanceNorm,
anisotropic patch and spacing) and whose fold_0/checkpoint_final.pth holds its `network_weights`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CT_PROPS = {"max": 900.0, "mean": 40.0, "median": 35.0, "min": -950.0, "percentile_00_5": -200.0,
            "percentile_99_5": 300.0, "std": 80.0}


UNET_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
            "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch"}
# A MONAI class this project has no layout for (four poolings: ROI 16³ reaches 1³).
BASIC_UNET_DEF = {"_target_": "BasicUNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                  "features": [4, 4, 8, 8, 16, 4], "norm": "batch"}


def write_bundle(
    folder: Path, *, seed: int = 0, spacing: bool = True, b_range: tuple[float, float] = (0.0, 1.0),
    network_def: dict[str, Any] | None = None, intensity: dict[str, Any] | None = None,
) -> Path:
    """A MONAI bundle, 3 classes, ROI 16³, 2 mm, window [-100, 200] (or the `intensity` transform,
    e.g. a NormalizeIntensityd); its network `network_def` (default a (4, 8, 16)-channel BatchNorm UNet)."""
    from monai.bundle import ConfigParser

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    transforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    ]
    if spacing:
        transforms.append({"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim", "mode": "bilinear"})
    transforms.append(intensity or {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -100, "a_max": 200,
                                    "b_min": b_range[0], "b_max": b_range[1], "clip": True})
    config = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "pixdim": [2.0, 2.0, 2.0],
        "network_def": dict(network_def or UNET_DEF),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 1, "overlap": 0.25},
    }
    metadata = {
        "version": "0.1.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0", "name": "tiny",
        "authors": "a lab", "license": "Apache-2.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [16, 16, 16], "modality": "CT"}},
            "outputs": {"pred": {"type": "image", "num_channels": 3,
                                 "channel_def": {"0": "background", "1": "liver", "2": "spleen"}}},
        },
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    torch.manual_seed(seed)
    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def plans(normalization: str = "CTNormalization") -> dict[str, Any]:
    """nnU-Net v2 plans of one 3d_fullres configuration: patch (z, y, x) = (8, 16, 24), spacing (3, 2, 1.5) mm."""
    return {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 2.0, 1.5],
        "original_median_shape_after_transp": [20, 30, 40],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [8, 16, 24], "median_image_size_in_voxels": [20, 30, 40],
            "spacing": [3.0, 2.0, 1.5], "normalization_schemes": [normalization], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": ARCH, "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": CT_PROPS},
    }


def write_nnunet_folder(folder: Path, *, seed: int = 0, labels: dict[str, Any] | None = None,
                        normalization: str = "CTNormalization") -> Path:
    """An nnU-Net v2 trained-model folder (nnUNetTrainer, fold 0) with a tiny PlainConvUNet, 3 classes, CT."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    folder.mkdir(parents=True)
    labels = labels or {"background": 0, "liver": 1, "tumour": 2}
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 4, "file_ending": ".nii.gz"}
    p = plans(normalization)
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "plans.json").write_text(json.dumps(p))
    torch.manual_seed(seed)
    kw = dict(ARCH["arch_kwargs"])
    kw.update(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU)
    n_classes = len([k for k in labels if k != "ignore"])
    net = PlainConvUNet(input_channels=1, num_classes=n_classes, deep_supervision=True, **kw)
    net.apply(net.initialize)
    (folder / "fold_0").mkdir()
    torch.save({"network_weights": net.state_dict(), "optimizer_state": None,
                "init_args": {"plans": p, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 1000},
               folder / "fold_0" / "checkpoint_final.pth")
    return folder
