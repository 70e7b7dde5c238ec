"""`predict_labels` (slab by slab, no whole softmax volume) gives exactly the argmax of `predict_probs`."""

from __future__ import annotations

import pytest
import torch

from assft_core.config import InferenceConfig
from assft_core.models.inference import predict_labels, predict_probs
from assft_core.models.registry import get_backbone


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_backbone("unet").make(1, 5, {"channels": (4, 8), "strides": (2,), "num_res_units": 1, "norm": "batch"})


@pytest.mark.parametrize(
    ("shape", "overlap", "sw_batch", "n_tta"),
    [
        ((40, 24, 20), 0.25, 1, 1),  # several windows along every axis
        ((37, 19, 16), 0.5, 3, 1),  # uneven sizes: last windows shifted back, batches of 3
        ((40, 24, 20), 0.75, 2, 1),  # the slab shifts by 4 planes of 16: in three chunks
        ((12, 24, 20), 0.25, 1, 1),  # smaller than the ROI along the first axis: MONAI pads (fallback)
        ((24, 16, 16), 0.25, 1, 2),  # flip TTA (fallback)
    ],
)
def test_labels_equal_the_argmax_of_the_softmax(net: torch.nn.Module, shape: tuple, overlap: float, sw_batch: int, n_tta: int) -> None:
    torch.manual_seed(1)
    image = torch.randn(1, *shape)
    cfg = InferenceConfig(roi_size=(16, 16, 16), overlap=overlap, sw_batch_size=sw_batch, n_tta=n_tta, device="cpu")
    labels, k = predict_labels(net, image, cfg)
    expected = predict_probs(net, image, cfg).max(dim=0).indices
    assert k == 5 and labels.shape == shape and labels.dtype == torch.uint8
    assert torch.equal(labels.long(), expected)
    assert len(torch.unique(labels)) > 1  # a non-trivial prediction


def test_the_scoring_softmax_stays_on_the_cpu_for_a_cpu_network(net: torch.nn.Module) -> None:
    from assft_core.models.inference import softmax_device

    cfg = InferenceConfig(roi_size=(16, 16, 16), device="cpu")
    assert softmax_device(net, cfg, 5, (40, 24, 20)) == torch.device("cpu")
    image = torch.randn(1, 20, 20, 20)
    assert torch.equal(predict_probs(net, image, cfg, output_device=torch.device("cpu")), predict_probs(net, image, cfg))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_scoring_softmax_on_the_gpu_equals_the_cpu_sums(net: torch.nn.Module) -> None:
    gpu = net.to("cuda")
    cfg = InferenceConfig(roi_size=(16, 16, 16), device="cuda")
    image = torch.randn(1, 40, 24, 20)
    on_gpu = predict_probs(gpu, image, cfg, output_device=torch.device("cuda"))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), predict_probs(gpu, image, cfg))
    net.to("cpu")
