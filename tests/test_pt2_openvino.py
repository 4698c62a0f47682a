"""The OpenVINO and AOTInductor runtimes (bench/runtimes/openvino.py, aotinductor.py, pt2e.py):
each agrees with eager PyTorch on the shared test model, pins what it must pin, loads only
verified bytes, and says why it cannot run where it cannot.
"""
from __future__ import annotations

import copy
import struct

import pytest
import torch
from test_runtimes import CUDA, HOST, INT8, agreement, rel_error, world  # noqa: F401  (fixture)

from bench.runtimes import get_runtime
from bench.runtimes.aotinductor import AOTInductorRuntime, cxx_compiler, shape_tag
from bench.runtimes.openvino import PACK_MAGIC, OpenVinoRuntime, pack_ir, unpack_ir
from bench.runtimes.pt2e import unshare_block_relus
from compress.errors import UserError
from compress.registry import get_recipe

openvino = pytest.importorskip("openvino", reason="openvino is not installed: pip install '.[openvino]'")
X86_ONLY = pytest.mark.skipif(HOST.kind != "x86", reason="PT2E int8 here is x86 only")


# ---------------------------------------------------------------- pure parts
def test_packed_ir_round_trips_and_rejects_what_is_not_one():
    xml, weights = b"<net/>", bytes(range(256)) * 3
    assert unpack_ir(pack_ir(xml, weights)) == (xml, weights)
    with pytest.raises(ValueError, match="not a packed"):
        unpack_ir(b"PK\x03\x04 a zip, say")
    truncated = PACK_MAGIC + struct.pack("<Q", 1000) + b"<net/>"
    with pytest.raises(ValueError, match="truncated"):
        unpack_ir(truncated)


def test_shape_tag_names_static_and_dynamic_packages():
    assert shape_tag((224, 224, 1), (32, 32)) == "224x224-b1"
    assert shape_tag(None, (32, 32)) == "32x32-bdyn"


def test_openvino_says_it_has_no_cuda_plugin():
    assert "no NVIDIA GPU plugin" in OpenVinoRuntime().unavailable_reason(CUDA)
    assert OpenVinoRuntime().unavailable_reason(HOST) is None


def test_missing_packages_are_skip_reasons_naming_the_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    assert "pip install 'resnet18-bench[openvino]'" in OpenVinoRuntime().unavailable_reason(HOST)
    monkeypatch.setattr("bench.runtimes.openvino.dist_version", lambda m: None)
    assert "NNCF" in OpenVinoRuntime().unsupported_reason(get_recipe(INT8), HOST)
    monkeypatch.setattr("bench.runtimes.aotinductor.dist_version", lambda m: None)
    if HOST.kind == "x86":
        assert "pip install 'resnet18-bench[pt2]'" in AOTInductorRuntime().unsupported_reason(get_recipe(INT8), HOST)
    assert AOTInductorRuntime().unsupported_reason(get_recipe("fp32"), HOST) is None


def test_aotinductor_without_a_compiler_names_the_fix(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert cxx_compiler() is None
    assert "install g++" in AOTInductorRuntime().unavailable_reason(HOST)


def test_aotinductor_int8_has_reasons_on_arm_and_cuda():
    rt = AOTInductorRuntime()
    from bench.devices import Device

    assert "X86InductorQuantizer" in rt.unsupported_reason(get_recipe("int8-static-arm"), Device("arm", "cpu"))
    assert "no CUDA int8" in rt.unsupported_reason(get_recipe("int8-static"), CUDA)
    assert rt.unsupported_reason(get_recipe("fp16"), CUDA) is None


def test_unsharing_block_relus_keeps_the_arithmetic():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        twin = copy.deepcopy(model)
        assert unshare_block_relus(twin) == 8  # ResNet18: 4 stages x 2 blocks
        assert unshare_block_relus(twin) == 0  # idempotent
        assert torch.allclose(twin(x), before, atol=1e-6)


# ---------------------------------------------------------------- against eager, real models
def test_openvino_fp32_matches_eager_and_runs_fp32_arithmetic(world):
    assert rel_error(world.logits("openvino", "fp32"), world.logits("eager", "fp32")) < 1e-3
    info = world.handle("openvino", "fp32").info
    # Pinned: the plugin's own default is bf16 on CPUs with AVX512_BF16/AMX.
    assert info["inference_precision"] in ("<Type: 'float32'>", "f32")
    assert info["properties"]["INFERENCE_NUM_THREADS"] == "1"  # test_runtimes.THREADS


def test_openvino_compiles_each_shape_it_is_given(world):
    x = world.ctx.card.normalize(world.ctx.dataset.test.images[:5], (48, 48))
    assert rel_error(world.logits("openvino", "fp32", x), world.logits("eager", "fp32", x)) < 1e-3
    one = world.logits("openvino", "fp32", world.x[3:4])
    assert rel_error(one, world.logits("eager", "fp32")[3:4]) < 1e-3


def test_openvino_int8_is_nncf_quantized_and_agrees(world):
    pytest.importorskip("nncf", reason="nncf is not installed: pip install '.[openvino]'")
    ov8 = world.logits("openvino", INT8)
    h = world.handle("openvino", INT8)
    assert "NNCF post-training" in h.info["quantization"]
    assert h.size_bytes < world.handle("openvino", "fp32").size_bytes / 2.5  # int8 weights, really
    assert agreement(ov8, world.logits("eager", "fp32")) >= 0.95


def test_openvino_refuses_a_damaged_ir_in_its_cache(world):
    from bench.runtimes.base import RECORD_PURPOSE, _record_body
    from compress import trust
    from compress.fsutil import atomic_write_json

    h = world.handle("openvino", "fp32")
    data = b"not an IR at all"
    # A record that verifies (signed with this user's key) over bytes that are not a packed IR:
    # the loader must say what to do, not crash inside OpenVINO.
    import hashlib
    import json

    rec = json.loads(h.path.with_name(h.path.name + ".json").read_text())
    body = _record_body(h.path.name, rec["key"], hashlib.sha256(data).hexdigest())
    h.path.write_bytes(data)
    atomic_write_json(h.path.with_name(h.path.name + ".json"), {**body, "mac": trust.sign_json(body, RECORD_PURPOSE)})
    try:
        with pytest.raises(UserError, match="not a packed OpenVINO IR"):
            get_runtime("openvino").load(world.request("fp32"))
    finally:
        h.path.unlink()  # the next load rebuilds it


@X86_ONLY
def test_aotinductor_fp32_matches_eager_and_batch_one_agrees(world):
    full = world.logits("aotinductor", "fp32")
    assert rel_error(full, world.logits("eager", "fp32")) < 1e-3
    assert rel_error(world.logits("aotinductor", "fp32", world.x[3:4]), full[3:4]) < 1e-3
    assert world.handle("aotinductor", "fp32").info["shape"].endswith("-bdyn")


@X86_ONLY
def test_aotinductor_static_shape_package_is_its_own_file(world):
    h = get_runtime("aotinductor").load(world.request("fp32", shape=(40, 40, 1)))
    assert h.path.name.endswith("-40x40-b1.pt2") and h.info["shape"] == "40x40-b1"
    x = world.ctx.card.normalize(world.ctx.dataset.test.images[:1], (40, 40))
    assert rel_error(h.logits(x), world.logits("eager", "fp32", x)) < 1e-3


@X86_ONLY
def test_aotinductor_int8_is_pt2e_quantized_and_agrees(world):
    pytest.importorskip("torchao", reason="torchao is not installed: pip install '.[pt2]'")
    pt8 = world.logits("aotinductor", INT8)
    assert "PT2E" in world.handle("aotinductor", INT8).info["quantization"]
    assert agreement(pt8, world.logits("eager", "fp32")) >= 0.95
    assert agreement(pt8, world.logits("eager", INT8)) >= 0.95


@X86_ONLY
def test_pt2e_dynamic_fc_is_close_to_float(world):
    # Regression: without a forward before convert, the dynamic fc kept its observer's initial
    # scale and agreed with fp32 on 10% of images.
    pytest.importorskip("torchao")
    assert agreement(world.logits("aotinductor", "int8-dynamic"), world.logits("eager", "fp32")) >= 0.98
