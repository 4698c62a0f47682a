"""The one ONNX export every ONNX-consuming runtime (ONNX Runtime, OpenVINO) starts from, so that
they run the same graph of the same model."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

OPSET = 17


def export_onnx(model: torch.nn.Module, input_size: tuple[int, int], path: Path,
                dtype: torch.dtype = torch.float32) -> None:
    """``model`` as ONNX at ``path``: batch, height and width dynamic, input "input", output
    "logits"; checked by onnx.checker."""
    example = torch.zeros(1, 3, *input_size, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated but exact for CNNs
        # A copy: .cpu()/.to() work in place, and the session shares this module with the eager
        # handle (on CUDA, exporting it would pull the fp32 reference off the GPU).
        torch.onnx.export(copy.deepcopy(model).cpu().to(dtype).eval(), (example,), str(path),
                          opset_version=OPSET, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    import onnx

    onnx.checker.check_model(str(path))
