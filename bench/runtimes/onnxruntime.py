"""ONNX Runtime: the float model exported to ONNX; int8 variants quantized by ONNX Runtime itself.

ONNX Runtime cannot load torch.ao int8 modules, so an int8 variant is rebuilt here the way an
ONNX deployment would make it: export the same float model the PyTorch variant started from,
then ORT static quantization (QDQ, per-channel, S8S8) calibrated on the same train images.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from compress.registry import WeightsFormat

from .base import (
    Handle,
    LoadRequest,
    Runtime,
    RuntimeOption,
    cached_file,
    calibration_batches,
    module_version,
    verified,
)
from .registry import register_runtime

OPSET = 17
SPINNING = "session.intra_op.allow_spinning"  # set on every session, read back into runtime_info
OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "disabled": "ORT_DISABLE_ALL"}


def _ort():
    import onnxruntime

    return onnxruntime


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    run_order = 20
    requantizes_int8 = True
    cuda_int8_refusal = "ORT's CUDA provider has no int8 Conv kernels: QDQ int8 would run dequantized in fp32"
    options = (
        RuntimeOption("--ort-opt-level", "all", "ONNX Runtime graph optimization level (recorded in the results)",
                      choices=tuple(OPT_LEVELS)),
        RuntimeOption("--ort-int8-format", "qdq", "ONNX Runtime static int8: qdq (QuantizeLinear/DequantizeLinear, "
                      "uint8 activations, int8 weights), qdq-s8s8 (int8 activations: slow kernels on x86) or "
                      "qoperator (QLinearConv, U8S8); recorded in the results", choices=("qdq", "qdq-s8s8", "qoperator")),
    )

    def versions(self):
        return {"onnxruntime": module_version("onnxruntime"), "onnx": module_version("onnx")}

    def unavailable_reason(self, device):
        try:
            ort = _ort()
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime, or the [gpu] extra for CUDA)"
        if device.kind == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here: pip install 'resnet18-bench[gpu]' (onnxruntime-gpu)"
        return None

    def providers(self, device) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.kind == "cuda" else ["CPUExecutionProvider"]

    def load(self, req: LoadRequest) -> Handle:
        ort = _ort()
        kind = req.recipe.kind
        dynamic = req.recipe.weights_format is WeightsFormat.TORCH_INT8_DYNAMIC
        int8_format = self.option(req, "ort_int8_format")
        key = {"ort": ort.__version__, "torch": torch.__version__, "opset": OPSET, "kind": kind.value,
               "dynamic": dynamic, "calibration": req.artifact.manifest.get("calibration"),
               "int8_format": int8_format if kind.quantized and not dynamic else None}

        def export(tmp, model, dtype):
            example = torch.zeros(1, 3, *req.card.input_size, dtype=dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated but exact for CNNs
                # A copy: .cpu()/.to() work in place, and the session shares this module with the
                # eager handle (on CUDA, exporting it would pull the fp32 reference off the GPU).
                torch.onnx.export(copy.deepcopy(model).cpu().to(dtype).eval(), (example,), str(tmp),
                                  opset_version=OPSET,
                                  dynamo=False, input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                                "logits": {0: "batch"}})
            import onnx

            onnx.checker.check_model(str(tmp))

        def make(tmp):
            if kind.quantized:
                float_path = tmp.with_name(tmp.name + ".fp32.onnx")
                export(float_path, req.float_model, torch.float32)
                try:
                    if dynamic:
                        quantize_dynamic_onnx(float_path, tmp)
                    else:
                        quantize_static_onnx(float_path, tmp, req, int8_format)
                finally:
                    float_path.unlink(missing_ok=True)
            else:
                export(tmp, req.model, torch.float16 if kind.half else torch.float32)

        # One file per int8 format, so that runs with either format never rebuild each other's.
        suffix = f"-{int8_format}" if key["int8_format"] else ""
        path = cached_file(req.artifact, f"model-{req.device.kind}{suffix}.onnx", key, make)
        so = ort.SessionOptions()
        so.intra_op_num_threads = req.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = OPT_LEVELS[self.option(req, "ort_opt_level")]
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.log_severity_level = 3
        # Spinning on (ONNX Runtime's default): without it every parallel op wakes a sleeping
        # worker, and on a VM a wake-up costs what a 32x32 conv does. fp32 at 32x32 read 0.9-1.7 ms
        # (moving with the host's load) instead of 0.5-0.6 ms; 224x224 is the same either way. Its
        # cost, workers spinning ~60 ms after a call, is absorbed by measure._switch_to
        # (docs/PERFORMANCE.md).
        so.add_session_config_entry(SPINNING, "1")
        sess = ort.InferenceSession(str(verified(path)), so, providers=self.providers(req.device))
        in_dtype = np.float16 if kind.half else np.float32
        info = {"providers": sess.get_providers(), "graph_optimization_level": level,
                "intra_op_threads": req.threads, "inter_op_threads": 1, "execution_mode": "sequential",
                "allow_spinning": sess.get_session_options().get_session_config_entry(SPINNING) == "1",
                "opset": OPSET, "onnxruntime": ort.__version__,
                "quantization": None if not kind.quantized else ("dynamic (MatMul/Gemm)" if dynamic else
                                                             STATIC_FORMATS[int8_format][0])}
        name = sess.get_inputs()[0].name
        return Handle(
            self.name,
            prepare=lambda x: np.ascontiguousarray(x.cpu().numpy().astype(in_dtype, copy=False)),
            run=lambda x: sess.run(None, {name: x})[0],
            to_numpy=lambda y: np.asarray(y, dtype=np.float32),
            path=path, info=info)


# Static int8 as ONNX Runtime's own quantizer writes it. Measured on the CIFAR-10 reference, batch 1,
# 2 threads (docs/PERFORMANCE.md): what matters is the activation type, not the format. With uint8
# activations (U8S8) both QDQ and QOperator run ORT's fast int8 conv kernels (6.6 / 6.8 ms at
# 224x224, fp32 21.7 ms); with int8 activations (S8S8) ORT falls back to slow paths (16.4 ms at
# 224x224, and at 32x32 2.3 ms, slower than fp32's 0.9 ms). Same top-1 on 2,000 images.
STATIC_FORMATS = {
    "qdq": ("static QDQ, per-channel, U8S8, MinMax calibration", "QDQ", "QUInt8"),
    "qdq-s8s8": ("static QDQ, per-channel, S8S8, MinMax calibration", "QDQ", "QInt8"),
    "qoperator": ("static QOperator (QLinearConv), per-channel, U8S8, MinMax calibration", "QOperator", "QUInt8"),
}


def quantize_static_onnx(src, dst, req: LoadRequest, int8_format: str = "qdq") -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = calibration_batches(req)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"input": x}

    pre = dst.with_name(dst.name + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        _, fmt, act = STATIC_FORMATS[int8_format]
        quantize_static(str(pre), str(dst), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                        activation_type=getattr(QuantType, act), weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)


def quantize_dynamic_onnx(src, dst) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Mirror the PyTorch recipe: only the Linear layer (Gemm/MatMul) gets int8 weights.
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["Gemm", "MatMul"], weight_type=QuantType.QInt8)
