"""OpenVINO: the float model's ONNX export read by OpenVINO's CPU plugin; int8 variants quantized by
NNCF (the quantizer OpenVINO deployments use) from the float parent, on the same calibration images
as the PyTorch int8 variant.

Precision is pinned, not left to the plugin: on CPUs with AVX512_BF16 or AMX, OpenVINO's default
inference precision is bf16, which is a different (lossy) model. Measured on a 2-core AMD EPYC with
avx512_bf16, 224x224, batch 1: the default (bf16) ran the fp32 reference in 10.2-10.8 ms, pinned
f32 in 19.3 ms, ONNX Runtime fp32 19.7 ms (docs/PERFORMANCE.md). An fp32 row here is fp32
arithmetic; ``inference_precision`` is read back from the compiled model into the results.

The derived file is OpenVINO's IR (model XML and weights) packed into one cached, signed file and
read from memory, so that what was verified is what is compiled.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from compress.registry import WeightsFormat

from .base import Handle, LoadRequest, Runtime, cached_file, calibration_batches, dist_version, verified_bytes
from .onnx_export import OPSET, export_onnx
from .registry import register_runtime

INSTALL = "pip install 'resnet18-bench[openvino]'"
PACK_MAGIC = b"OVIR1\n"  # then the XML's length (uint64, little-endian), the XML, the weights
# Every property the plugin is given, and read back into runtime_info: one stream, two threads
# (--threads), latency hint, fp32 arithmetic.
NNCF_PRESET = "performance"  # symmetric int8 activations and weights: OpenVINO's CPU int8 kernels
# Activation ranges: the global min and max over the calibration images, the rule PyTorch's
# observers and ONNX Runtime's MinMax calibration use. NNCF's default (the mean over images of each
# image's min and max) clips the rarer large activations: on the CIFAR-10 reference,
# prune-struct-0.5+int8 then agreed with its float parent on 97.6% of test images, below the
# equivalence rule's 98.2% (PyTorch int8's 98.7% - 0.5); with MINMAX 98.5% (docs/PERFORMANCE.md).
NNCF_ACTIVATION_RANGES = "minmax"


def pack_ir(xml: bytes, weights: bytes) -> bytes:
    return PACK_MAGIC + struct.pack("<Q", len(xml)) + xml + weights


def unpack_ir(data: bytes) -> tuple[bytes, bytes]:
    """Pure: (XML, weights) of a packed IR; ValueError when ``data`` is not one."""
    head = len(PACK_MAGIC) + 8
    if len(data) < head or not data.startswith(PACK_MAGIC):
        raise ValueError("not a packed OpenVINO IR")
    (n,) = struct.unpack("<Q", data[len(PACK_MAGIC):head])
    if head + n > len(data):
        raise ValueError("packed OpenVINO IR is truncated")
    return data[head:head + n], data[head + n:]


def compile_config(threads: int) -> dict:
    return {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"}


@register_runtime
class OpenVinoRuntime(Runtime):
    name = "openvino"
    run_order = 30
    requantizes_int8 = True

    def versions(self):
        return {"openvino": _ov_version(), "nncf": dist_version("nncf")}

    def unavailable_reason(self, device):
        if device.kind == "cuda":
            return "OpenVINO has no NVIDIA GPU plugin (its GPU plugin drives Intel GPUs): it runs on --device x86 and arm"
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            return f"openvino is not installed ({type(e).__name__}: {e}): {INSTALL}"
        return None

    def unsupported_reason(self, recipe, device):
        if recipe.kind.half:
            return "fp16 is a CUDA variant; OpenVINO runs here on CPUs only"
        if recipe.kind.quantized and dist_version("nncf") is None:
            return f"int8 in OpenVINO is made by NNCF, which is not installed: {INSTALL}"
        return super().unsupported_reason(recipe, device)

    def load(self, req: LoadRequest) -> Handle:
        import openvino as ov

        kind = req.recipe.kind
        dynamic = req.recipe.weights_format is WeightsFormat.TORCH_INT8_DYNAMIC
        key = {"openvino": ov.__version__, "torch": torch.__version__, "opset": OPSET, "kind": kind.value,
               "dynamic": dynamic, "nncf": dist_version("nncf") if kind.quantized else None,
               "calibration": req.artifact.manifest.get("calibration"),
               "preset": NNCF_PRESET if kind.quantized and not dynamic else None,
               "activation_ranges": NNCF_ACTIVATION_RANGES if kind.quantized and not dynamic else None}

        def make(tmp: Path):
            onnx_path = tmp.with_name(tmp.name + ".onnx")
            export_onnx(req.float_model if kind.quantized else req.model, req.card.input_size, onnx_path)
            model = ov.Core().read_model(str(onnx_path))
            if kind.quantized:
                model = quantize_weights_only(model) if dynamic else quantize_static_ov(model, req)
            xml = tmp.with_name(tmp.name + ".xml")
            ov.save_model(model, str(xml), compress_to_fp16=False)  # its default halves fp32 weights
            tmp.write_bytes(pack_ir(xml.read_bytes(), xml.with_suffix(".bin").read_bytes()))

        path = cached_file(req.artifact, f"openvino-{req.device.kind}.ir", key, make)
        try:
            xml, weights = unpack_ir(verified_bytes(path))
        except ValueError as e:
            from compress.errors import UserError

            raise UserError(f"{path}: {e}; delete {path.parent} and re-run") from None
        core = ov.Core()
        model = core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
        config = compile_config(req.threads)
        compiled: dict[tuple[int, ...], tuple] = {}
        info: dict = {"openvino": ov.__version__, "device": "CPU", "opset": OPSET,
                      "quantization": None if not kind.quantized else (
                          "NNCF weight compression, int8 per-channel, MatMul only" if dynamic else
                          f"NNCF post-training, {NNCF_PRESET} preset, {NNCF_ACTIVATION_RANGES} activation ranges, "
                          f"{len(req.calibration)} calibration images"),
                      "shapes": "static: one compiled model per input shape"}

        def prepare(x: torch.Tensor):
            arr = np.ascontiguousarray(x.cpu().numpy().astype(np.float32, copy=False))
            if arr.shape not in compiled:  # compiled outside the timed loop, for exactly this shape
                m = model.clone()
                m.reshape({m.inputs[0].any_name: ov.PartialShape(list(arr.shape))})
                cm = core.compile_model(m, "CPU", config)
                compiled[arr.shape] = (cm, cm.create_infer_request())
                if "properties" not in info:
                    info["properties"] = {k: str(cm.get_property(k)) for k in config}
                    info["inference_precision"] = str(cm.get_property("INFERENCE_PRECISION_HINT"))
            return arr

        def run(x: np.ndarray):
            request = compiled[x.shape][1]
            request.infer({0: x}, share_inputs=True)
            return request.get_output_tensor(0).data  # the request's buffer: copied by to_numpy

        prepare(torch.zeros(1, 3, *req.card.input_size))  # fills info before the first measurement
        return Handle(self.name, prepare=prepare, run=run, to_numpy=lambda y: np.array(y, dtype=np.float32),
                      path=path, info=info)


def _ov_version() -> str | None:
    try:
        import openvino

        return openvino.__version__
    except ImportError:
        return None


def quantize_static_ov(model, req: LoadRequest):
    """NNCF post-training int8 on every calibration image of the PyTorch int8 variant, one image per
    step (NNCF's statistics assume batch 1)."""
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    images = [x[None] for batch in calibration_batches(req) for x in batch]
    return nncf.quantize(model, nncf.Dataset(images), subset_size=len(images),
                         preset=nncf.QuantizationPreset.PERFORMANCE,
                         advanced_parameters=nncf.AdvancedQuantizationParameters(
                             activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))


def quantize_weights_only(model):
    """Mirror of the PyTorch dynamic recipe: int8 weights for the Linear layer (MatMul) only."""
    import nncf

    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM,
                                 ignored_scope=nncf.IgnoredScope(types=["Convolution"]))
