"""Adding a variant or a runtime is one registration: a toy int8 recipe and a toy runtime with an
option of its own, both defined here only, go through the build and through the plugin.

The toy recipe's apply function has an arbitrary name on purpose: the build may only branch on
what a recipe declares (kind, weights format, calibration, fine-tune, backend).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_context
from test_plugin import _restore_torch_globals, bench_cache, bench_run  # noqa: F401  (fixtures, pre-imports)

from bench.devices import host_arch
from bench.results import load_results
from bench.runtimes import Handle, LoadRequest, Runtime, RuntimeOption, register_runtime, runtimes
from bench.runtimes import registry as runtime_registry
from compress import quantize
from compress import registry as recipe_registry
from compress.build import _build_key, build_variant
from compress.registry import Finetune, Kind, Recipe, WeightsFormat, get_recipe, lineage, register_recipe

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.skipif(host_arch() != "x86", reason="the toy int8 recipe uses the x86 quantized engine")
TOY_VARIANT = "toy-int8"
TOY_RUNTIME = "toy"
TOY_REFUSAL = "the toy runtime refuses int8 variants"


def an_apply_function_with_any_name(model, ctx, recipe):
    calib = ctx.calibration_split()
    q = quantize.quantize_static(model, calib, ctx.card, backend=recipe.backend)
    return q, {"calibration": ctx.calibration_info(calib)}


class ToyRuntime(Runtime):
    """Runs the eager float model, scaled by its own option (1.0 keeps it equal to eager)."""

    name = TOY_RUNTIME
    options = (RuntimeOption("--toy-scale", 1.0, "multiply the logits by this", type=float),)

    def versions(self):
        return {"toylib": "1.2.3"}

    def unsupported_reason(self, recipe, device):
        return TOY_REFUSAL if recipe.kind.quantized else None

    def load(self, req: LoadRequest) -> Handle:
        scale = self.option(req, "toy_scale")
        model = copy.deepcopy(req.model).eval()

        def run(x):
            with torch.inference_mode():
                return model(x) * scale

        return Handle(self.name, prepare=lambda x: x, run=run, to_numpy=lambda y: y.float().numpy(),
                      path=req.artifact.weights_path, info={"toy_scale": scale})


@pytest.fixture
def toy_recipe():
    with recipe_registry.isolated():
        register_recipe(name=TOY_VARIANT, kind=Kind.INT8, summary="toy static int8", origin="a test",
                        parent="fp32", weights_format=WeightsFormat.TORCH_INT8_STATIC, calibrates=True,
                        backend="x86", devices=("x86",))(an_apply_function_with_any_name)
        yield get_recipe(TOY_VARIANT)


@pytest.fixture
def toy_runtime():
    with runtime_registry.isolated():
        register_runtime(ToyRuntime)
        yield runtimes()[TOY_RUNTIME]


# ---------------------------------------------------------------- through the build
def test_toy_int8_recipe_builds_with_its_declared_format_and_calibration(toy_recipe, tmp_path, card,
                                                                         trained_model, checkpoint, tiny_digits):
    ctx = make_context(card, trained_model, checkpoint, tiny_digits, tmp_path, log=lambda s: None)
    art = build_variant(TOY_VARIANT, ctx)
    m = art.manifest
    assert m["weights_format"] == "torch-int8-fx" and m["weights_file"] == "weights.int8.pt"
    assert m["backend"] == "x86" and m["calibration"]["n"] == ctx.calib_samples
    assert m["recipe"]["calibrates"] is True and m["recipe"]["kind"] == "int8"
    # It loads back through the declared format, as a quantized model.
    assert quantize.is_quantized(art.load_model(card))


def test_calibration_enters_the_build_key_only_for_recipes_that_calibrate(toy_recipe, tmp_path, card,
                                                                         trained_model, checkpoint, tiny_digits):
    a = make_context(card, trained_model, checkpoint, tiny_digits, tmp_path, calib_samples=16)
    b = replace(a, calib_samples=32)
    assert _build_key(lineage(TOY_VARIANT), a) != _build_key(lineage(TOY_VARIANT), b)
    assert _build_key(lineage("fp32"), a) == _build_key(lineage("fp32"), b)


def test_every_finetune_setting_is_in_the_build_key(tmp_path, card, trained_model, checkpoint, tiny_digits):
    ctx = make_context(card, trained_model, checkpoint, tiny_digits, tmp_path)
    base = get_recipe("prune-struct-0.5")
    keys = {_build_key([get_recipe("fp32"), base], ctx)}
    for change in ({"batch_size": 64}, {"warmup_fraction": 0.2}, {"augment": True}, {"lr": 0.01}):
        changed = replace(base, finetune=replace(base.finetune, **change))
        keys.add(_build_key([get_recipe("fp32"), changed], ctx))
    assert len(keys) == 5


def test_a_recipe_must_declare_a_format_that_stores_its_kind():
    with pytest.raises(ValueError, match="must declare its weights_format"):
        Recipe(name="x", kind=Kind.INT8, summary="", origin="", parent="fp32", apply=an_apply_function_with_any_name)
    with pytest.raises(ValueError, match="stores float"):
        Recipe(name="x", kind=Kind.INT8, summary="", origin="", parent="fp32", apply=an_apply_function_with_any_name,
               weights_format=WeightsFormat.SAFETENSORS_FLOAT32)
    with pytest.raises(ValueError, match="unknown device"):
        Recipe(name="x", kind=Kind.FLOAT, summary="", origin="", parent="fp32", apply=an_apply_function_with_any_name,
               devices=("tpu",))
    assert Finetune(epochs=1, lr=0.1).to_json()["batch_size"] == 128


def test_registration_is_scoped_to_the_isolated_block(toy_recipe, toy_runtime):
    assert TOY_VARIANT in recipe_registry.list_variants("toy-*") and TOY_RUNTIME in runtimes()


def test_after_the_block_the_toys_are_gone():
    assert TOY_RUNTIME not in runtimes()
    with pytest.raises(Exception, match="unknown variant"):
        get_recipe(TOY_VARIANT)


def test_runtime_option_flags_must_be_unique(toy_runtime):
    class Clash(ToyRuntime):
        name = "clash"

    with pytest.raises(ValueError, match="--toy-scale is already declared"):
        register_runtime(Clash)


# ---------------------------------------------------------------- through the plugin
def test_toy_recipe_and_runtime_through_the_plugin(toy_recipe, toy_runtime, bench_run):
    r = bench_run("--variant", f"fp32,{TOY_VARIANT}", "--runtime", f"eager,{TOY_RUNTIME}", "--toy-scale", "1.0",
                  "--input-size", "native", "--batch-size", "1", "--min-samples", "5", "--min-time", "0",
                  "--eval-samples", "50", "--baseline-missing", "skip", "--threads", "1", "-rs", "-v", "-k",
                  "size or equivalence or accuracy")
    text = "\n".join(r.outlines + r.errlines)
    assert r.ret == pytest.ExitCode.OK, text[-4000:]
    host = host_arch()
    results = load_results(bench_run.out / "reports" / f"digits-{host}.json")
    # Its option was parsed (a float) and is recorded with the run; its library version is in the header.
    assert results["options"]["toy_scale"] == 1.0
    assert results["versions"]["toylib"] == "1.2.3"
    items = {it["id"]: it for it in results["items"]}
    toy_fp32 = items[f"fp32-{TOY_RUNTIME}-{host}"]
    assert toy_fp32["status"] == "ok" and toy_fp32["runtime_info"] == {"toy_scale": 1.0}
    assert toy_fp32["equivalence"]["passed"] and toy_fp32["accuracy"]["n"] == 50
    # The toy int8 variant ran on eager, and the toy runtime's own refusal is the skip reason.
    assert items[f"{TOY_VARIANT}-eager-{host}"]["status"] == "ok"
    skipped = {s["id"]: s["reason"] for s in results["skipped"]}
    assert skipped[f"{TOY_VARIANT}-{TOY_RUNTIME}-{host}"] == TOY_REFUSAL
    # Test ids name the toy variant and runtime like any built-in one; the skip shows its reason.
    assert f"test_equivalence[fp32-{TOY_RUNTIME}-{host}] PASSED" in text
    assert "SKIPPED" in text and TOY_REFUSAL in text


def test_a_toy_option_value_reaches_the_runtime(toy_recipe, toy_runtime, bench_run):
    r = bench_run("--variant", "fp32", "--runtime", f"eager,{TOY_RUNTIME}", "--toy-scale", "2.5",
                  "--input-size", "native", "--batch-size", "1", "--eval-samples", "50", "--baseline-missing", "skip",
                  "--threads", "1", "-k", "size or equivalence")
    results = load_results(bench_run.out / "reports" / f"digits-{host_arch()}.json")
    item = next(it for it in results["items"] if it["runtime"] == TOY_RUNTIME)
    assert item["runtime_info"] == {"toy_scale": 2.5}
    # Scaled logits are not equivalent to eager: the equivalence item fails, as it should.
    assert item["equivalence"]["passed"] is False and r.ret == pytest.ExitCode.TESTS_FAILED


def test_a_bad_toy_option_value_is_a_usage_error(toy_runtime, bench_run):
    r = bench_run("--runtime", TOY_RUNTIME, "--toy-scale", "lots")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert np.any(["--toy-scale" in ln for ln in r.errlines])
