"""Each built-in variant really is what it claims, measured on the artifact reloaded from disk,
plus the variant registry (names, families, glob patterns, lineage)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ALL_VARIANTS, DEFAULT_ENGINE

from compress import registry
from compress.errors import UserError
from compress.evaluate import predict, top1
from compress.models import count_parameters
from compress.quantize import is_quantized
from compress.registry import get_recipe, lineage, list_variants

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@torch.no_grad()
def outputs(model, built, n=16, engine=None):
    """Logits for the first n test images, as float32, on the given quantized engine."""
    if engine:
        torch.backends.quantized.engine = engine
    try:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        x = built.ctx.card.normalize(built.ctx.dataset.test.images[:n]).to(dtype)
        return model(x).float()
    finally:
        torch.backends.quantized.engine = DEFAULT_ENGINE


def convs(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def zero_fraction(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / t.numel()


def manifest(built, name) -> dict:
    return built.arts[name].manifest


# ---------------------------------------------------------------- unstructured pruning: zeros, not savings
def test_fp32_weights_have_no_zeros_to_start_with(reloaded):
    # Baseline for the pruning checks below: every zero they count was made by the pruning.
    for name, m in convs(reloaded("fp32")).items():
        assert zero_fraction(m.weight) < 0.001, name


def test_prune_l1_20_zeroes_20_percent_of_every_conv_and_the_fc_keeping_shapes(reloaded):
    fp32, pruned = reloaded("fp32"), reloaded("prune-l1-20")
    layers = {**convs(pruned), "fc": pruned.fc}
    assert len(layers) == 21  # 20 convs in ResNet18, plus the fc
    for name, m in layers.items():
        assert zero_fraction(m.weight) == pytest.approx(0.2, abs=0.005), name
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in fp32.state_dict().items()}


def test_prune_l1_20_file_is_as_big_as_fp32_and_only_gzip_is_smaller(built):
    # The tutorial's unstructured pruning stores every zero: a dense file of the same size.
    fp32, pruned = manifest(built, "fp32"), manifest(built, "prune-l1-20")
    assert pruned["size_bytes"] == fp32["size_bytes"]
    assert pruned["size_gzip_bytes"] < 0.97 * fp32["size_gzip_bytes"]
    assert pruned["parameters"] == fp32["parameters"]
    assert pruned["nonzero_parameters"] < 0.81 * fp32["nonzero_parameters"]
    assert pruned["macs"] == fp32["macs"]  # dense kernels do the same work


def test_prune_global_30_zeroes_30_percent_across_convs_unevenly(reloaded):
    layers = convs(reloaded("prune-global-30"))
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    total = sum(m.weight.numel() for m in layers.values())
    assert zeros / total == pytest.approx(0.3, abs=0.002)
    shares = [zero_fraction(m.weight) for m in layers.values()]
    assert max(shares) - min(shares) > 0.05  # global: layers lose different shares
    assert torch.equal(reloaded("prune-global-30").fc.weight, reloaded("fp32").fc.weight)  # convs only


# ---------------------------------------------------------------- structured pruning: real savings
def test_prune_struct_removes_channels_in_multiples_of_8(reloaded):
    fp32, pruned = convs(reloaded("fp32")), convs(reloaded("prune-struct-0.5"))
    assert fp32["layer1.0.conv1"].out_channels == 64 and pruned["layer1.0.conv1"].out_channels == 32
    for name, m in pruned.items():
        assert m.weight.shape[0] == m.out_channels  # the tensors shrank, not just a mask
        assert m.out_channels % 8 == 0, name
        assert m.out_channels <= fp32[name].out_channels, name
    assert sum(m.out_channels for m in pruned.values()) <= 0.55 * sum(m.out_channels for m in fp32.values())
    assert reloaded("prune-struct-0.5").fc.out_features == 10  # the classifier keeps every class


def test_frontier_pruning_keeps_its_stage_widths(built, reloaded):
    pruned = convs(reloaded("prune-stages-0.2-0.3-0.3-0.9"))
    # 20% off 64, 30% off 128 and 256, 90% off 512; each width rounded down to a multiple of 8.
    widths = {stage: pruned[f"{stage}.0.conv1"].out_channels for stage in ("layer1", "layer2", "layer3", "layer4")}
    assert widths == {"layer1": 48, "layer2": 88, "layer3": 176, "layer4": 48}
    assert pruned["conv1"].out_channels == 48  # the stem is tied to layer1 by the residual additions
    m, uniform = manifest(built, "prune-stages-0.2-0.3-0.3-0.9"), manifest(built, "prune-struct-0.5")
    # layer4 holds most parameters, layers 1-3 most of the MACs at 32x32
    assert m["parameters"] < 0.6 * uniform["parameters"] and uniform["macs"] < m["macs"] < 0.5 * manifest(built, "fp32")["macs"]
    assert torch.equal(outputs(reloaded("prune-stages-0.2-0.3-0.3-0.9"), built),
                       outputs(built.float_models["prune-stages-0.2-0.3-0.3-0.9"], built))


def test_prune_struct_has_a_quarter_of_the_parameters_and_fewer_macs(built, reloaded):
    fp32, pruned = manifest(built, "fp32"), manifest(built, "prune-struct-0.5")
    assert fp32["parameters"] == pytest.approx(11.18e6, rel=0.01)
    assert pruned["parameters"] == pytest.approx(2.8e6, rel=0.05)
    assert count_parameters(reloaded("prune-struct-0.5"))[0] == pruned["parameters"]
    assert pruned["macs"] < 0.35 * fp32["macs"]
    assert pruned["size_bytes"] < 0.3 * fp32["size_bytes"]


def test_prune_struct_history_replays_to_the_same_outputs(built, reloaded):
    # The artifact stores a pruning history + weights (no pickled module): replaying it on a fresh
    # ResNet18 must give exactly the model that was built in memory.
    assert manifest(built, "prune-struct-0.5")["pruning_file"] == "pruning.json"
    in_memory = built.float_models["prune-struct-0.5"]
    assert torch.equal(outputs(reloaded("prune-struct-0.5"), built), outputs(in_memory, built))


def test_a_one_step_finetune_does_not_divide_by_zero(card, tiny_digits):
    # --finetune-epochs / `compress train --epochs` small enough for one optimizer step.
    from conftest import random_resnet18, subset

    from compress.train import TrainConfig, train

    summary = train(random_resnet18(card), subset(tiny_digits.train, 8), card, TrainConfig(epochs=1.0),
                    log=lambda s: None)
    assert summary["steps"] == 1 and np.isfinite(summary["final_loss"])


def test_prune_struct_int8_inherits_the_pruned_architecture(built, reloaded):
    m = manifest(built, "prune-struct-0.5+int8")
    assert m["pruning_file"] == "pruning.json"
    assert (built.arts["prune-struct-0.5+int8"].dir / "pruning.json").read_bytes() == \
        (built.arts["prune-struct-0.5"].dir / "pruning.json").read_bytes()
    assert m["macs"] == manifest(built, "prune-struct-0.5")["macs"]


# ---------------------------------------------------------------- static int8
STATIC_INT8 = [("int8-static", "fp32", "x86"), ("int8-static-arm", "fp32", "qnnpack"),
               ("prune-struct-0.5+int8", "prune-struct-0.5", "x86"),
               ("prune-stages-0.2-0.3-0.3-0.9+int8", "prune-stages-0.2-0.3-0.3-0.9", "x86")]


@pytest.mark.parametrize("name,parent,backend", STATIC_INT8)
def test_static_int8_really_quantizes_every_conv(name, parent, backend, reloaded):
    model = reloaded(name)
    assert is_quantized(model)
    assert not any(type(m) in (torch.nn.Conv2d, torch.nn.Linear) for m in model.modules())  # no float layer left
    qconvs = [m for m in model.modules() if type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized")
              or type(m).__name__ == "Conv2d" and type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert len(qconvs) == len(convs(reloaded(parent))) == 20
    assert all(m.weight().dtype == torch.qint8 for m in qconvs)
    # x86 quantizes weights per output channel, qnnpack per tensor (what ARM kernels take).
    expected = torch.per_tensor_affine if backend == "qnnpack" else torch.per_channel_affine
    assert {m.weight().qscheme() for m in qconvs} == {expected}


@pytest.mark.parametrize("name,parent,backend", STATIC_INT8)
def test_static_int8_weights_file_is_4x_smaller_than_its_float_parent(name, parent, backend, built):
    m, p = manifest(built, name), manifest(built, parent)
    assert m["weights_format"] == "torch-int8-fx" and m["backend"] == backend
    assert 3.6 < p["size_bytes"] / m["size_bytes"] < 4.1
    assert (built.arts[name].dir / m["weights_file"]).stat().st_size == m["size_bytes"]


@pytest.mark.parametrize("name,parent,backend", STATIC_INT8)
def test_static_int8_reloaded_outputs_equal_the_built_model(name, parent, backend, built, reloaded):
    # The stored int8 weights, scales and zero points rebuild the same kernels, bit for bit.
    assert torch.equal(outputs(reloaded(name), built, engine=backend),
                       outputs(built.saved[name], built, engine=backend))


@pytest.mark.parametrize("name", ["int8-static", "int8-static-arm"])
def test_static_int8_accuracy_is_within_a_few_points_of_fp32(name, built, reloaded):
    # int8-static-arm is built for qnnpack; qnnpack kernels run on x86 too, so it is checked here.
    fp32 = manifest(built, "fp32")["accuracy"]["all"]
    acc = manifest(built, name)["accuracy"]["all"]
    assert fp32["top1"] > 0.8  # a model that has learnt something, or the comparison means nothing
    assert acc["top1"] == pytest.approx(fp32["top1"], abs=0.03)
    # The stored accuracy is the reloaded artifact's accuracy on its own engine.
    split = built.ctx.dataset.test
    torch.backends.quantized.engine = manifest(built, name)["backend"]
    try:
        assert top1(predict(reloaded(name), split, built.ctx.card), split.labels) == pytest.approx(acc["top1"])
    finally:
        torch.backends.quantized.engine = DEFAULT_ENGINE


def test_int8_static_calibrates_on_train_images(built):
    ctx = built.ctx
    cal = manifest(built, "int8-static")["calibration"]
    assert cal["split"] == "train" and cal["n"] == ctx.calib_samples == 16
    import hashlib

    expected = ctx.dataset.calibration_split(16).images.numpy().tobytes()
    assert cal["sha256"] == hashlib.sha256(expected).hexdigest()


# ---------------------------------------------------------------- dynamic int8 and fp16
def test_int8_dynamic_quantizes_only_the_fc(reloaded):
    model = reloaded("int8-dynamic")
    assert type(model.fc) is torch.ao.nn.quantized.dynamic.Linear
    assert len(convs(model)) == 20 and all(type(m) is torch.nn.Conv2d for m in convs(model).values())
    assert all(m.weight.dtype == torch.float32 for m in convs(model).values())


def test_int8_dynamic_is_not_smaller_than_fp32(built):
    # The tutorial claims 8.4 MB for this; only the 5,120 fc weights are int8, the file is fp32-sized.
    fp32, dyn = manifest(built, "fp32"), manifest(built, "int8-dynamic")
    assert dyn["size_bytes"] > 0.9 * fp32["size_bytes"]
    assert dyn["size_bytes"] > 40e6
    assert dyn["accuracy"]["all"]["top1"] == pytest.approx(fp32["accuracy"]["all"]["top1"], abs=0.02)


def test_fp16_stores_half_precision_weights_in_half_the_bytes(built, reloaded):
    model = reloaded("fp16")
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    fp32, half = manifest(built, "fp32"), manifest(built, "fp16")
    assert half["size_bytes"] / fp32["size_bytes"] == pytest.approx(0.5, abs=0.01)
    assert half["weights_format"] == "safetensors-float16"
    assert torch.allclose(outputs(model, built), outputs(reloaded("fp32"), built), atol=0.05, rtol=0.02)


def test_int8_dynamic_reloads_the_same_whatever_engine_was_selected_before(built, card):
    from compress.build import load_artifact

    reference = outputs(built.saved["int8-dynamic"], built)
    torch.backends.quantized.engine = "qnnpack"  # e.g. int8-static-arm was benchmarked just before
    try:
        model = load_artifact(built.arts["int8-dynamic"].dir).load_model(card)
    finally:
        torch.backends.quantized.engine = DEFAULT_ENGINE
    assert torch.equal(outputs(model, built), reference)


# ---------------------------------------------------------------- registry
def test_list_variants_has_every_builtin_with_parents_before_children():
    names = list_variants("*")
    assert set(ALL_VARIANTS) <= set(names)
    for name in names:
        parent = get_recipe(name).parent
        assert parent is None or names.index(parent) < names.index(name), name


@pytest.mark.parametrize("pattern,expected", [
    ("prune-*", {"prune-l1-20", "prune-global-30", "prune-struct-0.5", "prune-struct-0.5+int8",
                 "prune-stages-0.2-0.3-0.3-0.9", "prune-stages-0.2-0.3-0.3-0.9+int8"}),
    ("int8-*", {"int8-dynamic", "int8-static", "int8-static-arm"}),
    (["fp32", "fp16"], {"fp32", "fp16"}),
    ("*+int8", {"prune-struct-0.5+int8", "prune-stages-0.2-0.3-0.3-0.9+int8"}),
])
def test_list_variants_glob_patterns(pattern, expected, isolated_registry):
    names = list_variants(pattern)
    assert expected <= set(names)
    # Only family members registered on demand (prune-struct-0.3 ...) may come on top.
    assert set(names) - expected <= {n for n in registry._REGISTRY if n.startswith(("prune-struct-", "prune-stages-"))}


def test_list_variants_without_a_match_is_a_user_error():
    with pytest.raises(UserError, match="no variant matches quant-"):
        list_variants("quant-*")


def test_lineage_runs_from_fp32_to_the_variant():
    assert [r.name for r in lineage("prune-struct-0.5+int8")] == ["fp32", "prune-struct-0.5", "prune-struct-0.5+int8"]
    assert [r.name for r in lineage("fp32")] == ["fp32"]


def test_unknown_variant_is_a_user_error_that_lists_the_known_ones():
    with pytest.raises(UserError, match=r"unknown variant 'int4-magic'.*python -m compress list.*fp32"):
        get_recipe("int4-magic")


@pytest.mark.parametrize("name", ["prune-struct-1.5", "prune-struct-0.0", "prune-struct-", "prune-struct-0.5+int4"])
def test_out_of_range_or_malformed_family_members_are_rejected(name, isolated_registry):
    with pytest.raises(UserError):
        get_recipe(name)
    assert name not in registry._REGISTRY


@pytest.fixture
def isolated_registry(monkeypatch):
    # Family members register themselves on first use; keep those out of the other tests.
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_family_members_are_created_on_demand(isolated_registry):
    r = get_recipe("prune-struct-0.3")
    assert (r.parent, r.kind, r.params["ratio"]) == ("fp32", "float", 0.3)
    assert get_recipe("prune-struct-0.3") is r  # registered once, then found by name
    assert "prune-struct-0.3" in list_variants("prune-struct-*")
    assert [x.name for x in lineage("prune-struct-0.3+int8")] == ["fp32", "prune-struct-0.3", "prune-struct-0.3+int8"]


def test_parents_stay_before_children_when_a_family_child_is_requested_first(isolated_registry):
    get_recipe("prune-struct-0.7+int8")
    names = list_variants("*")
    assert "prune-struct-0.7" in names
    assert names.index("prune-struct-0.7") < names.index("prune-struct-0.7+int8")
