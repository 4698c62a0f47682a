"""bench/runtimes: each adapter loads a real variant, agrees with eager PyTorch, writes a real
deployable file, caches it safely, and says honestly where it cannot run.

The model is the shared test ResNet18 from tests/conftest.py (random-init features, fc fitted in
closed form: decisive outputs in seconds, no SGD). fp32 and the host's static int8 variant are
built once for the module into a temporary artifact root.
"""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.devices import Device, resolve_device
from bench.runtimes import LoadRequest, get_runtime, runtimes
from bench.runtimes.base import cached_file, verified
from bench.runtimes.eager import EagerRuntime
from bench.runtimes.onnxruntime import OnnxRuntime, provider_list
from bench.runtimes.torchscript import TorchScriptRuntime
from compress.build import Artifact, BuildContext, build_variant
from compress.errors import UserError
from compress.fsutil import sha256_file
from compress.registry import get_recipe

HOST = resolve_device("cpu")
# The static int8 variant this host deploys: fbgemm/onednn (x86) or qnnpack (ARM).
INT8 = "int8-static" if HOST.kind == "x86" else "int8-static-arm"
THREADS = 1  # keep the shared CI machine responsive; the value is what runtime_info must record
CUDA = Device("cuda", "cuda")


def rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


class World:
    """What BenchSession does for one run, by hand: build, load each model once, load handles."""

    def __init__(self, ctx: BuildContext):
        self.ctx = ctx
        self.arts: dict[str, Artifact] = {}
        self.models: dict[str, torch.nn.Module] = {}
        self.handles: dict[tuple[str, str], object] = {}
        self.x = ctx.card.normalize(ctx.dataset.test.images)  # the eval images, native size

    def art(self, variant: str) -> Artifact:
        if variant not in self.arts:
            self.arts[variant] = build_variant(variant, self.ctx)
        return self.arts[variant]

    def model(self, variant: str) -> torch.nn.Module:
        if variant not in self.models:
            self.models[variant] = self.art(variant).load_model(self.ctx.card)
        return self.models[variant]

    def request(self, variant: str, **changes) -> LoadRequest:
        recipe = get_recipe(variant)
        model = self.model(variant)
        float_model = self.model(recipe.parent) if recipe.kind.quantized else model
        req = LoadRequest(self.art(variant), recipe, model, float_model, self.ctx.card, HOST, THREADS,
                          self.ctx.calibration_split())
        return replace(req, **changes)

    def handle(self, runtime: str, variant: str):
        if (runtime, variant) not in self.handles:
            self.handles[runtime, variant] = get_runtime(runtime).load(self.request(variant))
        return self.handles[runtime, variant]

    def logits(self, runtime: str, variant: str, x=None) -> np.ndarray:
        return self.handle(runtime, variant).logits(self.x if x is None else x)


@pytest.fixture(scope="module")
def world(tmp_path_factory, card, trained_model, tiny_digits, checkpoint) -> World:
    if HOST.kind not in get_recipe(INT8).devices:
        pytest.skip(f"no static int8 variant targets {HOST.kind}")
    ctx = BuildContext(card=card, base_model=trained_model, checkpoint_sha256=sha256_file(checkpoint),
                       checkpoint_label="test checkpoint", dataset=tiny_digits,
                       artifact_root=tmp_path_factory.mktemp("runtime-artifacts"), calib_samples=64,
                       log=lambda s: None)
    engine = torch.backends.quantized.engine
    yield World(ctx)
    torch.backends.quantized.engine = engine  # int8 handles switch it on every call


# ---------------------------------------------------------------- outputs agree with eager
@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_fp32_runtime_matches_eager(world, runtime):
    # Same float model, other graph executor: only float reassociation may differ (~1e-6).
    assert rel_error(world.logits(runtime, "fp32"), world.logits("eager", "fp32")) < 1e-3


@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_fp32_runtime_matches_eager_at_a_non_native_size(world, runtime):
    # Latency is also timed at 224x224: the exported/traced graph must accept other spatial sizes
    # (ONNX dynamic axes, shape-agnostic TorchScript), not only the card's native size.
    x = world.ctx.card.normalize(world.ctx.dataset.test.images[:16], (48, 48))
    assert rel_error(world.logits(runtime, "fp32", x), world.logits("eager", "fp32", x)) < 1e-3


def test_fp32_eager_is_the_model_as_built(world):
    with torch.inference_mode():
        direct = world.ctx.base_model(world.x).numpy()
    assert rel_error(world.logits("eager", "fp32"), direct) < 1e-5


def test_int8_eager_is_really_quantized_and_close_to_fp32(world):
    h = world.handle("eager", INT8)
    assert h.info["quantized"] is True
    assert agreement(world.logits("eager", INT8), world.logits("eager", "fp32")) >= 0.95


def test_int8_torchscript_runs_the_same_int8_kernels_as_eager(world):
    # Traced from the same quantized modules: decisions agree (nearly) everywhere.
    assert agreement(world.logits("torchscript", INT8), world.logits("eager", INT8)) >= 0.99


def test_int8_onnxruntime_agrees_with_eager_int8_and_fp32(world):
    # ORT quantizes the float parent itself (same calibration images): a different rounding,
    # so only decisions are compared. The bench's own rule on a real checkpoint is >= 0.99; the
    # test model's random features have smaller margins (0.98-0.99 measured), hence 0.95.
    ort = world.logits("onnxruntime", INT8)
    assert np.isfinite(ort).all()
    assert agreement(ort, world.logits("eager", INT8)) >= 0.95
    assert agreement(ort, world.logits("eager", "fp32")) >= 0.95


def test_batch_of_one_and_full_batch_agree(world):
    # Latency runs batch 1, accuracy batches of 256: both must give the same answer.
    for runtime in ("eager", "torchscript", "onnxruntime"):
        full = world.logits(runtime, "fp32")
        one = world.logits(runtime, "fp32", world.x[3:4])
        assert rel_error(one, full[3:4]) < 1e-3, runtime


# ---------------------------------------------------------------- the deployable files
def test_eager_reports_the_artifact_weights_file(world):
    for variant in ("fp32", INT8):
        h = world.handle("eager", variant)
        assert h.path == world.art(variant).weights_path and h.path.is_file()
        assert h.size_bytes == h.path.stat().st_size > 0


@pytest.mark.parametrize("variant", ["fp32", INT8])
def test_torchscript_file_is_a_loadable_frozen_module(world, variant):
    h = world.handle("torchscript", variant)
    assert h.path.suffix == ".pt" and h.path.is_file() and h.size_bytes == h.path.stat().st_size
    assert h.path.parent == world.art(variant).dir / "runtime"  # beside the artifact, not in the repo
    module = torch.jit.load(str(h.path))
    assert isinstance(module, torch.jit.ScriptModule)
    assert h.info["frozen"] is True


@pytest.mark.parametrize("variant", ["fp32", INT8])
def test_onnx_file_passes_the_checker(world, variant):
    import onnx

    h = world.handle("onnxruntime", variant)
    assert h.path.suffix == ".onnx" and h.path.is_file()
    onnx.checker.check_model(str(h.path))


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_onnx_int8_is_really_quantized_and_about_4x_smaller(world):
    fp32 = world.handle("onnxruntime", "fp32").path
    int8 = world.handle("onnxruntime", INT8).path  # the default format: QDQ with uint8 activations
    ops = _op_types(int8)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, f"no QDQ nodes in {int8.name}: {sorted(ops)}"
    assert "QuantizeLinear" not in _op_types(fp32)
    # int8 weights + per-channel scales: ResNet18's 11.2M parameters shrink ~4x.
    ratio = fp32.stat().st_size / int8.stat().st_size
    assert 3.0 < ratio < 4.5, f"fp32/int8 ONNX size ratio {ratio:.2f}"


def _activation_zero_point_types(path: Path) -> set[int]:
    """Element types of the activation QuantizeLinear zero points (uint8 = 2, int8 = 3)."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return {inits[n.input[2]].data_type for n in model.graph.node
            if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[0] not in inits}


@pytest.mark.parametrize("fmt, activation_type", [("qdq", 2), ("qdq-s8s8", 3)])
def test_onnx_int8_qdq_activation_type_follows_the_format(world, fmt, activation_type):
    h = OnnxRuntime().load(world.request(INT8, options={"ort_int8_format": fmt}))
    assert _activation_zero_point_types(h.path) == {activation_type}
    assert ("U8S8" if activation_type == 2 else "S8S8") in h.info["quantization"]


def test_onnx_int8_qoperator_format_is_selectable_cached_apart_and_recorded(world):
    default = world.handle("onnxruntime", INT8)
    qop = OnnxRuntime().load(world.request(INT8, options={"ort_int8_format": "qoperator"}))
    ops = _op_types(qop.path)
    assert "QLinearConv" in ops and "Conv" not in ops, sorted(ops)
    assert "QOperator" in qop.info["quantization"] and "QDQ" in default.info["quantization"]
    assert qop.path != default.path and "QLinearConv" not in _op_types(default.path)
    # Same calibration, two encodings of one quantization: decisions agree.
    assert agreement(qop.logits(world.x), default.logits(world.x)) >= 0.95


# ---------------------------------------------------------------- the runtime file cache
def test_second_load_reuses_the_cached_file(world, monkeypatch):
    first = world.handle("onnxruntime", "fp32").path
    stamp = first.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError("exported again although the cached file is valid")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = OnnxRuntime().load(world.request("fp32"))
    assert again.path == first and first.stat().st_mtime_ns == stamp


def test_tampered_cached_file_is_never_loaded_silently(world):
    h = world.handle("torchscript", "fp32")
    path = h.path
    record = json.loads(path.with_name(path.name + ".json").read_text())
    tampered = path.read_bytes() + b"\0swapped"
    path.write_bytes(tampered)

    # verified() is the last check before a file is handed to a runtime.
    with pytest.raises(UserError) as err:
        verified(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)

    # Loading again must either refuse (UserError) or rebuild a file that matches its record.
    try:
        again = TorchScriptRuntime().load(world.request("fp32"))
    except UserError:
        return
    assert again.path.read_bytes() != tampered
    assert sha256_file(again.path) == json.loads(path.with_name(path.name + ".json").read_text())["sha256"]
    assert record["key"] == json.loads(path.with_name(path.name + ".json").read_text())["key"]
    assert rel_error(again.logits(world.x), world.logits("eager", "fp32")) < 1e-3


class _SetstateWritesAFile(torch.nn.Module):
    """What an attacker saves over a cached TorchScript file: torch.jit.load runs the module's
    __setstate__, which here creates the file named in its state (torch.from_file, shared=True)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        written = torch.from_file(state[0], True, 8)
        self.training = bool(written.sum() >= 0.0) and state[1]


@pytest.mark.parametrize("record", ["rewritten", "old-mac-kept"])
def test_forged_torchscript_with_a_matching_record_never_runs(world, tmp_path, capfd, record):
    """The attack: a scripted module whose __setstate__ writes a file, saved over the cached fp32
    TorchScript file, its sha256 record rewritten to match. The record's HMAC needs this user's
    key, which lives outside the cache: the file is rebuilt, and nothing in it ever runs."""
    path = world.handle("torchscript", "fp32").path  # cached and trusted
    rec_path = path.with_name(path.name + ".json")
    rec = json.loads(rec_path.read_text())
    marker = tmp_path / "PWNED"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated
        torch.jit.save(torch.jit.script(_SetstateWritesAFile(str(marker))), str(path))
    forged = path.read_bytes()
    forged_rec = {"key": rec["key"], "sha256": sha256_file(path)}
    if record == "old-mac-kept":
        forged_rec.update(file=rec["file"], mac=rec["mac"])
    rec_path.write_text(json.dumps(forged_rec))
    capfd.readouterr()

    with pytest.raises(UserError, match="is not signed with your cache key") as err:
        verified(path)
    assert "\n" not in str(err.value)
    again = TorchScriptRuntime().load(world.request("fp32"))
    assert not marker.exists(), "the forged module's __setstate__ ran"
    assert again.path == path and path.read_bytes() != forged
    assert rel_error(again.logits(world.x), world.logits("eager", "fp32")) < 1e-3
    assert f"warning: {rec_path} is not signed with your cache key" in capfd.readouterr().err
    verified(path)  # the rebuilt file's record is signed again

    # The payload is real: loaded directly, it does write the file.
    (tmp_path / "forged.pt").write_bytes(forged)
    torch.jit.load(str(tmp_path / "forged.pt"))
    assert marker.exists()


def test_forged_onnx_file_with_a_matching_record_is_rebuilt(world):
    """ONNX files carry no code, but whoever swaps one chooses the measured accuracy."""
    path = world.handle("onnxruntime", "fp32").path
    rec_path = path.with_name(path.name + ".json")
    other = world.handle("onnxruntime", INT8).path  # a valid model with other outputs
    path.write_bytes(other.read_bytes())
    rec_path.write_text(json.dumps({**json.loads(rec_path.read_text()), "sha256": sha256_file(path)}))
    with pytest.raises(UserError, match="not signed with your cache key"):
        verified(path)
    again = OnnxRuntime().load(world.request("fp32"))
    assert sha256_file(again.path) != sha256_file(other)
    assert rel_error(again.logits(world.x), world.logits("eager", "fp32")) < 1e-3


def test_cached_file_record_is_signed_and_bound_to_its_file_name(tmp_path):
    art = Artifact("x", tmp_path / "x", {"key": "k"})
    a = cached_file(art, "a.bin", {}, lambda tmp: tmp.write_bytes(b"same bytes"))
    b = cached_file(art, "b.bin", {}, lambda tmp: tmp.write_bytes(b"same bytes"))
    rec_a = json.loads(a.with_name("a.bin.json").read_text())
    assert len(rec_a["mac"]) == 64 and verified(a) == a and verified(b) == b
    # A valid record copied to another name does not vouch for that file.
    b.with_name("b.bin.json").write_text(json.dumps({**rec_a, "file": "b.bin"}))
    with pytest.raises(UserError, match="not signed"):
        verified(b)


def test_cached_file_rebuilds_when_its_key_changes(tmp_path):
    art = Artifact("x", tmp_path / "x", {"key": "artifact-1"})
    made = []

    def make(tmp):
        made.append(tmp)
        tmp.write_bytes(f"build {len(made)}".encode())

    p1 = cached_file(art, "f.bin", {"v": 1}, make)
    p2 = cached_file(art, "f.bin", {"v": 1}, make)
    assert p1 == p2 and len(made) == 1
    cached_file(art, "f.bin", {"v": 2}, make)  # e.g. a new torch or onnxruntime version
    assert len(made) == 2 and p1.read_bytes() == b"build 2"
    cached_file(Artifact("x", art.dir, {"key": "artifact-2"}), "f.bin", {"v": 2}, make)  # rebuilt artifact
    assert len(made) == 3


def test_failed_build_leaves_no_file_behind(tmp_path):
    art = Artifact("x", tmp_path / "x", {"key": "k"})

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        cached_file(art, "f.bin", {}, broken)
    leftovers = [p.name for p in (art.dir / "runtime").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_onnx_export_does_not_move_or_convert_the_callers_model(world, tmp_path, monkeypatch):
    # The session shares one module between the eager handle and the exporters. Module.cpu() and
    # .to() work in place, so exporting the module itself would pull the eager reference off the GPU
    # (on --device cuda every later fp32-eager call would then fail). Export must work on a copy.
    req = world.request("fp32")
    req = replace(req, artifact=Artifact(req.artifact.name, tmp_path / "fresh", req.artifact.manifest))
    touched = []
    for name in ("cpu", "to", "half", "float"):
        real = getattr(torch.nn.Module, name)

        def spy(self, *a, _real=real, _name=name, **k):
            if self is req.model:
                touched.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.nn.Module, name, spy)
    h = OnnxRuntime().load(req)
    assert h.path.parent == tmp_path / "fresh" / "runtime"
    assert touched == [], f"the shared model was changed in place by .{touched[0]}()"


# ---------------------------------------------------------------- runtime_info
def test_onnxruntime_info_records_threads_and_optimization_level(world):
    info = world.handle("onnxruntime", INT8).info
    assert info["intra_op_threads"] == THREADS and info["inter_op_threads"] == 1
    assert info["graph_optimization_level"] == "ORT_ENABLE_ALL"
    # Read back from the live session: spinning workers are what makes 32x32 fast (and what the
    # runtime switch in bench/measure.py waits out), so the results must say whether it was on.
    assert info["allow_spinning"] is True
    assert info["providers"] == ["CPUExecutionProvider"]
    assert "QDQ" in info["quantization"]
    assert world.handle("onnxruntime", "fp32").info["quantization"] is None
    json.dumps(info)  # goes into the results file as is


def test_onnxruntime_optimization_level_option_is_applied_and_recorded(world):
    req = world.request("fp32")
    if not hasattr(req, "options"):
        pytest.skip("LoadRequest has no runtime options in this version")
    h = OnnxRuntime().load(replace(req, options={"ort_opt_level": "basic"}))
    assert h.info["graph_optimization_level"] == "ORT_ENABLE_BASIC"
    assert rel_error(h.logits(world.x), world.logits("eager", "fp32")) < 1e-3


@pytest.mark.parametrize("runtime", ["eager", "torchscript"])
def test_torch_runtime_info_records_threads_and_engine(world, runtime):
    fp32, int8 = world.handle(runtime, "fp32").info, world.handle(runtime, INT8).info
    assert fp32["threads"] == int8["threads"] == torch.get_num_threads()
    assert fp32["quantized_engine"] is None
    assert int8["quantized_engine"] == get_recipe(INT8).backend
    json.dumps(fp32), json.dumps(int8)


# ---------------------------------------------------------------- where a runtime cannot run
@pytest.mark.parametrize("runtime", [EagerRuntime(), TorchScriptRuntime(), OnnxRuntime()], ids=lambda r: r.name)
def test_int8_on_cuda_is_unsupported_in_every_runtime(runtime):
    # torch.ao int8 has no CUDA kernels; ORT's CUDA provider would run QDQ dequantized in fp32.
    reason = runtime.unsupported_reason(get_recipe("int8-static"), CUDA)
    assert isinstance(reason, str) and "int8" in reason and "\n" not in reason


@pytest.mark.parametrize("runtime", [EagerRuntime(), TorchScriptRuntime(), OnnxRuntime()], ids=lambda r: r.name)
def test_float_and_cpu_combinations_are_supported(runtime):
    assert runtime.unsupported_reason(get_recipe("fp32"), CUDA) is None
    assert runtime.unsupported_reason(get_recipe("fp16"), CUDA) is None
    assert runtime.unsupported_reason(get_recipe("int8-static"), Device("x86", "cpu")) is None
    assert runtime.unsupported_reason(get_recipe("int8-static-arm"), Device("arm", "cpu")) is None


def test_onnxruntime_on_cuda_without_the_cuda_provider_names_onnxruntime_gpu(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    reason = OnnxRuntime().unavailable_reason(CUDA)
    assert reason and "onnxruntime-gpu" in reason and "CUDAExecutionProvider" in reason
    assert OnnxRuntime().unavailable_reason(Device("x86", "cpu")) is None


def test_onnxruntime_on_cuda_with_the_cuda_provider_is_available(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert OnnxRuntime().unavailable_reason(CUDA) is None
    assert provider_list(CUDA.kind)[0] == "CUDAExecutionProvider"


@pytest.mark.parametrize("device", [Device("x86", "cpu"), CUDA], ids=["x86", "cuda"])
def test_onnxruntime_not_installed_is_a_reason_on_every_device(monkeypatch, device):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    reason = OnnxRuntime().unavailable_reason(device)
    assert reason and "not installed" in reason and "pip install onnxruntime" in reason


def test_torch_runtimes_are_always_available():
    for name in ("eager", "torchscript"):
        assert get_runtime(name).unavailable_reason(Device("x86", "cpu")) is None


def test_registry_order_is_eager_first():
    # Eager is the reference every other runtime is checked against: it runs first.
    assert list(runtimes())[0] == "eager"
    assert {"eager", "torchscript", "onnxruntime"} <= set(runtimes())
