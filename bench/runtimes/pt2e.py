"""PyTorch 2 export-based int8 (PT2E, torchao): the quantization flow PyTorch maintains now that
torch.ao's FX and eager flows are deprecated. Used by the AOTInductor runtime, which re-quantizes
each int8 variant from its float parent on the same calibration images as the FX variant.

One model rewrite is needed and made here: torchvision's BasicBlock calls its one ``self.relu``
module twice, so export groups both calls into one source partition and
``X86InductorQuantizer`` refuses it ("Input partition has more than one output node", torch 2.14.1
with torchao 0.18.0). Giving the block's second call a ReLU module of its own leaves the arithmetic
unchanged and lets conv+add+relu fuse.
"""
from __future__ import annotations

import copy
import types
from collections.abc import Iterable

import numpy as np
import torch

MAX_BATCH = 4096  # the upper bound of the exported batch dimension
# Part of the cache key of every package made from this flow: raise it whenever the flow's output
# can change, so that no cached package made by an older flow is reused.
FLOW_VERSION = 2


def batch_dim():
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def _block_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu_out(out + identity)


def unshare_block_relus(model: torch.nn.Module) -> int:
    """Give every torchvision BasicBlock's final ReLU a module of its own (in place); how many."""
    from torchvision.models.resnet import BasicBlock

    n = 0
    for mod in model.modules():
        if isinstance(mod, BasicBlock) and not hasattr(mod, "relu_out"):
            mod.relu_out = torch.nn.ReLU(inplace=False)
            mod.forward = types.MethodType(_block_forward, mod)
            n += 1
    return n


def quantize_x86(float_model: torch.nn.Module, input_size: tuple[int, int], calibration: Iterable[np.ndarray],
                 dynamic_linear_only: bool = False) -> torch.nn.Module:
    """The float model as a PT2E int8 graph module for Inductor's x86 kernels.

    Static: every conv and the fc get int8 activations and per-channel int8 weights, calibrated on
    ``calibration`` (float32 NCHW batches). ``dynamic_linear_only``: the fc alone, with dynamic
    activation quantization (the mirror of the torch.ao dynamic recipe): ``calibration`` then only
    sets the weight observers."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = copy.deepcopy(float_model).cpu().float().eval()
    unshare_block_relus(model)
    example = (torch.zeros(2, 3, *input_size),)
    graph = torch.export.export(model, example, dynamic_shapes=({0: batch_dim()},)).module()
    quantizer = xiq.X86InductorQuantizer()
    if dynamic_linear_only:
        quantizer.set_module_type_qconfig(
            torch.nn.Linear, xiq.get_default_x86_inductor_quantization_config(is_dynamic=True))
    else:
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    # Weight observers record during a forward too: without one, a dynamic fc keeps the
    # observer's initial scale and its outputs are garbage (10% top-1 agreement, measured).
    with torch.no_grad():
        for batch in calibration:
            prepared(torch.from_numpy(batch))
    return convert_pt2e(prepared)
