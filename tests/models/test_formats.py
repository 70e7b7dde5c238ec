"""MONAI bundles and nnU-Net v2 folders in (load, score, fine-tune) and back out, checked with the libraries."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from assft_core.cli import main
from assft_core.config import InferenceConfig, MriNormalisation, TrainConfig
from assft_core.errors import ModelError
from assft_core.models.card import ModelCard
from assft_core.models.formats import OVERRIDE_FILE, export_model
from assft_core.models.loaded import load_model, save_model
from assft_core.models.source_stats import compute_source_stats
from assft_core.train.data import TrainData, TrainSample
from assft_core.train.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
from foreign_factories import BASIC_UNET_DEF, CT_PROPS, UNET_DEF, write_bundle, write_nnunet_folder  # noqa: E402

INFER = dict(overlap=0.25, device="cpu")


def _monai_net(bundle: Path) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return net.eval()


def _fine_tune(model, tmp_path: Path, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((1, *shape)).astype(np.float32)
    label = np.zeros((1, *shape), np.uint8)
    label[0, 2:10, 2:10, 2:6] = 1
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    cfg = TrainConfig(steps=2, batch_size=1, unlabelled_batch_size=1, patch_size=tuple(model.card.roi_size),
                      lr=1e-2, checkpoint_every=2, augment=False, device="cpu")
    train(cfg, model.network, TrainData([TrainSample("a", image, label)]), run_dir=tmp_path / "run")
    changed = [k for k, v in model.network.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "two optimiser steps changed no weight"


def test_bundle_loads_scores_fine_tunes_and_exports(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    model = load_model(bundle, device="cpu")
    card = model.card
    assert card.backbone == "monai_bundle" and card.classes == {0: "background", 1: "liver", 2: "spleen"}
    assert card.spacing_mm == (2.0, 2.0, 2.0) and card.roi_size == (16, 16, 16)
    assert card.preprocess.modality.value == "CT" and card.preprocess.ct_window == (-100.0, 200.0)
    assert model.has_head and model.source_stats_origin == "batchnorm" and not model.report.missing
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.network(x), _monai_net(bundle)(x), atol=1e-5)
    out = model.scoring_pass(torch.rand(1, 20, 18, 16), InferenceConfig(roi_size=card.roi_size, **INFER))
    assert out.probs.shape == (3, 20, 18, 16) and out.embedding is not None and len(out.norm_moments) >= 3

    _fine_tune(model, tmp_path, (20, 18, 16))
    round_dir = save_model(model.network, card, tmp_path / "round1")  # what a round writes: a native card
    exported = export_model(round_dir, "monai_bundle", tmp_path / "out" / "adapted")
    from monai.bundle import load as bundle_load

    theirs = bundle_load("adapted", bundle_dir=str(tmp_path / "out"), workflow_type="inference", device="cpu").eval()
    ours = load_model(exported, device="cpu")
    with torch.no_grad():
        ref = model.network(x)
        assert torch.allclose(theirs(x), ref, atol=1e-5) and torch.allclose(ours.network(x), ref, atol=1e-5)
    assert ours.card.classes == card.classes and ours.card.spacing_mm == card.spacing_mm
    # The brought bundle's metadata is kept (authors, licence), with the adapted classes.
    meta = json.loads((exported / "configs" / "metadata.json").read_text())
    assert (meta["name"], meta["authors"], meta["license"]) == ("tiny", "a lab", "Apache-2.0")
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {str(k): v for k, v in card.classes.items()}
    assert "adapted with ASSFT Studio" in meta["description"]
    from assft_core.models.formats.monai_bundle import _metadata_of_export

    assert _metadata_of_export(meta, meta)["description"] == meta["description"]  # said once on re-export


def test_bundle_output_range_goes_to_the_input_adapter(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", b_range=(-1.0, 1.0))
    model = load_model(bundle, device="cpu")
    y = torch.rand(1, 1, 16, 16, 16)  # this project's [0, 1] window; the bundle's is [-1, 1]
    with torch.no_grad():
        assert torch.allclose(model.network(y), _monai_net(bundle)(2 * y - 1), atol=1e-5)


@pytest.mark.parametrize(("norm", "scheme"), [
    ({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True}, "zscore_nonzero"),
    ({"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0, "channel_wise": True}, "minmax"),
])
def test_bundle_mri_normalisation_is_reproduced_and_exported_as_monai_preprocesses_it(
    tmp_path: Path, norm: dict, scheme: str
) -> None:
    import nibabel as nib
    from monai.bundle import ConfigParser

    from assft_core.data.preprocess import preprocess_image

    model = load_model(write_bundle(tmp_path / "b", intensity=norm), device="cpu")
    pre = model.card.preprocess
    assert pre.modality.value == "MRI" and pre.mri_normalisation.value == scheme and not pre.crop_foreground
    assert f"{norm['_target_']} " in model.card.notes and "reproduced" in model.card.notes
    assert "input_scale" not in model.card.backbone_kwargs
    if scheme == "zscore_nonzero":
        with pytest.raises(ModelError, match="subtrahend.*assft_override.json"):
            ModelCard.load(write_bundle(tmp_path / "fixed", intensity={**norm, "subtrahend": 10.0}))
    else:  # min-max without a target range is not guessed
        with pytest.raises(ModelError, match="ScaleIntensityd without minv / maxv.*assft_override.json"):
            ModelCard.load(write_bundle(tmp_path / "norange", intensity={**norm, "minv": None}))
    # Out, for the bundle itself and for a native UNet (cropped to the body): MONAI running the
    # exported bundle's own preprocessing gives this project's input.
    rng = np.random.default_rng(3)
    img = np.zeros((16, 16, 16), np.float32)
    img[2:14, 2:14, 2:14] = rng.gamma(2.0, 50.0, (12, 12, 12)) + 1.0
    img[6:9, 6:9, 6:9] = 0.0
    scan = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(img, np.diag([2.0, 2.0, 2.0, 1.0])), scan)
    kwargs = {k: v for k, v in UNET_DEF.items() if k in ("channels", "strides", "num_res_units", "norm")}
    native = ModelCard(backbone="unet", in_channels=1, classes=model.card.classes, roi_size=(16, 16, 16),
                       backbone_kwargs=kwargs, preprocess=replace(pre, crop_foreground=True))
    body = replace(native, preprocess=replace(pre, mri_normalisation=MriNormalisation.ZSCORE_BODY))
    with pytest.raises(ModelError, match="'zscore_body'.*no MONAI transform.*'zscore_nonzero'"):
        export_model(save_model(model.network, body, tmp_path / "body"), "monai_bundle", tmp_path / "out" / "body")
    assert not (tmp_path / "out" / "body").exists()  # nothing half-written
    for name, card in (("bundle", model.card), ("unet", native)):
        exported = export_model(save_model(model.network, card, tmp_path / name), "monai_bundle", tmp_path / "out" / name)
        parser = ConfigParser()
        parser.read_config(str(exported / "configs" / "inference.json"))
        theirs = parser.get_parsed_content("preprocessing")({"image": str(scan)})["image"]
        ours = preprocess_image([scan], card.preprocess)
        assert ours.image.shape == (1, 16, 16, 16)  # cropped to 12³ or not, then padded to the divisor
        np.testing.assert_allclose(np.asarray(theirs), ours.image, atol=1e-5)
        np.testing.assert_allclose(np.asarray(theirs.affine), ours.affine, atol=1e-5)


def test_bundle_of_an_unregistered_class_gets_its_encoder_from_the_override_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_bundle(tmp_path / "b", network_def=BASIC_UNET_DEF)
    bare = load_model(bundle, device="cpu")
    assert bare.has_head and not bare.has_embedding and not bare.encoder_norm_layers()
    assert main(["model-info", str(bundle), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "no hookable encoder" in out and "encoder_layout" in out and "down_1.convs.conv_0.adn.N" in out

    def layout(**fields: object) -> None:
        spec = {"norm_layers": ["conv_0.conv_0.adn.N", "down_1.convs.conv_0.adn.N", "down_4.convs.conv_1.adn.N"],
                "stages": ["down_2", "down_4"], "head": ["final_conv"], "total_stride": 16, **fields}
        (bundle / OVERRIDE_FILE).write_text(json.dumps({"backbone_kwargs": {"encoder_layout": spec}}))

    layout(norm_layers=["down_1.convs.conv_0.conv"])  # a convolution is no normalisation layer
    with pytest.raises(ModelError, match="not normalisation layers; choose from .*conv_0.conv_0.adn.N"):
        load_model(bundle, device="cpu")
    layout(stages=["down_9"])
    with pytest.raises(ModelError, match=r"\['down_9'\] are not modules of the network"):
        load_model(bundle, device="cpu")
    layout()
    model = load_model(bundle, device="cpu")
    assert model.has_embedding and model.source_stats_origin == "batchnorm" and len(model.encoder_norm_layers()) == 3
    out = model.scoring_pass(torch.rand(1, 20, 18, 16), InferenceConfig(roi_size=(16, 16, 16), **INFER))
    assert out.embedding is not None and out.embedding.shape == (16,)
    assert sorted(out.norm_moments) == sorted(model.encoder_norm_layers())
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.network(x), _monai_net(bundle)(x), atol=1e-5)  # hooks change nothing


def test_bundle_missing_spacing_names_the_override_field(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", spacing=False)
    with pytest.raises(ModelError, match=r"no Spacingd.*spacing_mm.*assft_override.json"):
        ModelCard.load(bundle)
    (bundle / OVERRIDE_FILE).write_text(json.dumps({"preprocess": {"spacing_mm": [1.0, 1.0, 2.5]}}))
    card = ModelCard.load(bundle)
    assert card.spacing_mm == (1.0, 1.0, 2.5) and card.preprocess.ct_window == (-100.0, 200.0)


def _nnunet_reference(folder: Path, y: torch.Tensor) -> torch.Tensor:
    """Logits of nnU-Net's own predictor network for this project's input `y` (1, 1, X, Y, Z) in [0, 1]."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    lo, hi = CT_PROPS["percentile_00_5"], CT_PROPS["percentile_99_5"]
    hu = lo + y * (hi - lo)  # the HU values this project's CT window mapped to y
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    norm = CTNormalization(use_mask_for_norm=False, intensityproperties=CT_PROPS)
    z = torch.from_numpy(norm.run(hu[0].numpy().copy())).float()[None]
    with torch.no_grad():  # SimpleITK arrays are (z, y, x): reverse this project's (x, y, z)
        return predictor.network.eval()(z.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)


def test_nnunet_folder_loads_scores_fine_tunes_and_exports(tmp_path: Path) -> None:
    folder = write_nnunet_folder(tmp_path / "nn")
    model = load_model(folder, device="cpu")
    card = model.card
    assert card.backbone == "nnunet" and card.classes == {0: "background", 1: "liver", 2: "tumour"}
    # plans (z, y, x): spacing (3, 2, 1.5) mm, patch (8, 16, 24) -> this project's RAS (x, y, z)
    assert card.spacing_mm == (1.5, 2.0, 3.0) and card.roi_size == (24, 16, 8)
    assert card.preprocess.ct_window == (-200.0, 300.0) and "exactly" in card.notes
    assert model.has_head and model.source_stats_origin == "none"
    norms = model.encoder_norm_layers()
    assert norms and all(n.startswith("encoder.stages.") and n.endswith(".norm") for n in norms)
    y = torch.rand(1, 1, 24, 16, 8)
    with torch.no_grad():
        assert torch.allclose(model.network(y), _nnunet_reference(folder, y), atol=1e-4)

    cfg = InferenceConfig(roi_size=card.roi_size, **INFER)
    out = model.scoring_pass(torch.rand(1, 30, 20, 12), cfg)
    assert out.probs.shape == (3, 30, 20, 12) and out.embedding is not None
    assert set(out.norm_moments) == set(norms)
    # InstanceNorm keeps no running statistics: `assft stats`' code gives them over source volumes.
    stats = compute_source_stats(model, [torch.rand(1, 26, 18, 10)], cfg)
    assert set(stats) == set(norms) and all(v.shape == m.shape and (v > 0).all() for m, v in stats.values())

    _fine_tune(model, tmp_path, (26, 18, 10))
    round_dir = save_model(model.network, card, tmp_path / "round1")
    exported = export_model(round_dir, "nnunet", tmp_path / "nnunet_out")
    with torch.no_grad():
        ref = model.network(y)
    assert torch.allclose(_nnunet_reference(exported, y), ref, atol=1e-4)  # nnU-Net's own predictor
    ours = load_model(exported, device="cpu")
    with torch.no_grad():
        assert torch.allclose(ours.network(y), ref, atol=1e-5)
    with pytest.raises(ModelError, match="not a MONAI network"):
        export_model(round_dir, "monai_bundle", tmp_path / "nope")


def test_nnunet_refusals_and_overrides(tmp_path: Path) -> None:
    regions = write_nnunet_folder(tmp_path / "r", labels={"background": 0, "whole": [1, 2], "core": 2})
    with pytest.raises(ModelError, match="region-based"):
        ModelCard.load(regions)
    folder = write_nnunet_folder(tmp_path / "n")
    (folder / OVERRIDE_FILE).write_text(json.dumps({"configuration": "2d"}))
    with pytest.raises(ModelError, match=r"configuration '2d' not in the plans.*assft_override.json"):
        ModelCard.load(folder)
    mr = write_nnunet_folder(tmp_path / "z", normalization="ZScoreNormalization")
    card = ModelCard.load(mr)
    assert card.preprocess.modality.value == "MRI" and card.preprocess.mri_normalisation.value == "zscore"
    assert "reproduced" in card.notes and card.backbone_kwargs["input_scale"] == [1.0]
    plans_file = mr / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["use_mask_for_norm"] = [True]
    plans_file.write_text(json.dumps(plans))
    assert ModelCard.load(mr).preprocess.mri_normalisation.value == "zscore_body"
    rescaled = ModelCard.load(write_nnunet_folder(tmp_path / "r01", normalization="RescaleTo01Normalization"))
    assert rescaled.preprocess.mri_normalisation.value == "minmax" and "RescaleTo01Normalization reproduced" in rescaled.notes
    plans_file = tmp_path / "r01" / "plans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["RescaleTo01Normalization", "ZScoreNormalization"]
    plans["configurations"]["3d_fullres"]["use_mask_for_norm"] = [False, False]
    plans_file.write_text(json.dumps(plans))
    dataset_file = tmp_path / "r01" / "dataset.json"
    dataset = json.loads(dataset_file.read_text())
    dataset["channel_names"] = {"0": "T1", "1": "T2"}
    dataset_file.write_text(json.dumps(dataset))
    mixed = ModelCard.load(tmp_path / "r01")  # two schemes across channels: still approximated
    assert mixed.preprocess.mri_normalisation.value == "percentile" and "approximated" in mixed.notes


def test_cli_model_info_init_predict_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    from tests.train.factories import write_box_scan

    bundle = write_bundle(tmp_path / "bundle")
    folder = write_nnunet_folder(tmp_path / "nn")
    assert main(["model-info", str(bundle), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "format: MONAI bundle" in out and "head for the card's classes: yes" in out and "source statistics: batchnorm" in out
    assert main(["model-info", str(folder), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "format: nnU-Net v2" in out and "source statistics: none" in out and "run `assft stats`" in out

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    scan, _ = write_box_scan(tmp_path / "scans", "s", affine)
    for model_dir in (bundle, folder):
        target = tmp_path / f"pred_{model_dir.name}"
        assert main(["predict", str(model_dir), str(scan), "-o", str(target), "--device", "cpu"]) == 0
        written = nib.load(str(target / "s.nii.gz"))
        assert written.shape == nib.load(str(scan)).shape and int(np.asarray(written.dataobj).max()) <= 2

    from tests.session.session_factories import make_dataset

    data = make_dataset(tmp_path / "data")
    assert main(["init", str(tmp_path / "proj"), "--dataset", str(data), "--model", str(folder)]) == 0
    capsys.readouterr()

    csv = (data / "cases.csv").read_text().replace("p0,A,pool", "p0,A,source_train")
    (data / "cases.csv").write_text(csv)
    assert main(["stats", "--data", str(data), "--checkpoint", str(folder), "--device", "cpu"]) == 0
    assert json.loads((folder / OVERRIDE_FILE).read_text())["source_stats"] == "source_stats.pt"
    assert not (folder / "model_card.json").exists()  # the nnU-Net folder stays an nnU-Net folder
    assert load_model(folder, device="cpu").source_stats_origin == "file"


class _EncDec(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 5, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2.0), torch.nn.Conv3d(5, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def test_torchscript_embedding_from_a_named_submodule(tmp_path: Path) -> None:
    import warnings

    torch.manual_seed(0)
    net = _EncDec().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(tmp_path / "model.ts"))
    card = {"backbone": "torchscript", "in_channels": 1, "classes": {"0": "bg", "1": "fg"}, "roi_size": [16, 16, 16],
            "checkpoint": "model.ts"}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert not load_model(tmp_path, device="cpu").has_embedding
    (tmp_path / "model_card.json").write_text(json.dumps({**card, "backbone_kwargs": {"embedding_module": "encoder"}}))
    model = load_model(tmp_path, device="cpu")
    assert model.has_embedding and any("submodule 'encoder'" in n for n in model.report.notes)
    image = torch.rand(1, 16, 16, 16)
    out = model.scoring_pass(image, InferenceConfig(roi_size=(16, 16, 16), **INFER))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(net.encoder(image[None]).flatten(2).mean(2)[0].double(), dim=0)
        assert torch.allclose(out.probs, torch.softmax(net(image[None]), 1)[0], atol=1e-5)
    assert torch.allclose(out.embedding.double(), expected, atol=1e-5)
    (tmp_path / "model_card.json").write_text(json.dumps({**card, "backbone_kwargs": {"embedding_module": "decoder"}}))
    with pytest.raises(ModelError, match="no submodule 'decoder'"):
        load_model(tmp_path, device="cpu")


def test_exported_bundle_run_by_monai_reproduces_assft_predict(tmp_path: Path) -> None:
    # MONAI running the exported bundle's own preprocessing and inferer (on its probabilities
    # network) gives the probabilities and labels of this project's pipeline: same grid (body crop,
    # padding to the divisor), same windows and overlap, probabilities blended. A [-1, 1] bundle
    # range checks that the export's intensity step feeds the network what the input adapter did.
    import nibabel as nib
    from monai.bundle import ConfigParser

    from assft_core.data.preprocess import preprocess_image
    from assft_core.models.inference import predict_labels, predict_probs

    model = load_model(write_bundle(tmp_path / "b", b_range=(-1.0, 1.0)), device="cpu")
    card = replace(model.card, preprocess=replace(model.card.preprocess, crop_foreground=True))
    rng = np.random.default_rng(0)
    hu = np.full((44, 38, 30), -1000.0, np.float32)
    hu[4:40, 5:33, 3:27] = rng.normal(40.0, 80.0, (36, 28, 24))
    scan = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.diag([-1.6, -1.4, 2.5, 1.0])), scan)  # LPS, anisotropic
    exported = export_model(save_model(model.network, card, tmp_path / "m"), "monai_bundle", tmp_path / "out", overlap=0.5)
    parser = ConfigParser()
    parser.read_config(str(exported / "configs" / "inference.json"))
    parser.get_parsed_content("network_def").load_state_dict(torch.load(exported / "models" / "model.pt", weights_only=True))
    theirs_image = parser.get_parsed_content("preprocessing")({"image": str(scan)})["image"]
    with torch.no_grad():
        theirs = parser.get_parsed_content("inferer")(theirs_image[None].as_tensor(), parser.get_parsed_content("probabilities_network").eval())[0]
    ours_case = preprocess_image([scan], card.preprocess)
    infer = InferenceConfig(roi_size=card.roi_size, overlap=0.5, sw_batch_size=1, device="cpu")
    ours = predict_probs(model.network, torch.from_numpy(ours_case.image), infer)
    assert tuple(theirs.shape) == tuple(ours.shape) and all(s % card.preprocess.divisor == 0 for s in ours.shape[1:])
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    labels, _ = predict_labels(model.network, torch.from_numpy(ours_case.image), infer)
    assert float((theirs.argmax(0) == labels.long()).float().mean()) >= 0.999
