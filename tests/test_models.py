"""Checkpoint loading: every supported layout loads, nothing in a checkpoint can run code, and every
bad file is a one-line UserError that says what to do. Plus the torch version guard and counters."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import make_card, random_resnet18
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.errors import UserError
from compress.models import count_macs, count_parameters, load_model, read_state_dict, require_safe_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_card():
    return make_card(["cat", "dog", "eel"])


@pytest.fixture(scope="module")
def state_dict(small_card):
    return random_resnet18(small_card, seed=3).state_dict()


def assert_one_line(err: pytest.ExceptionInfo, *needles: str):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg


# ---------------------------------------------------------------- torch version guard
@pytest.mark.parametrize("version", ["2.9.1", "2.5.0+cpu", "1.13.1"])
def test_torch_before_2_10_is_refused_naming_the_cve(version):
    with pytest.raises(UserError, match="CVE-2025-32434") as e:
        require_safe_torch(version)
    assert_one_line(e, version, "install torch>=2.10")


@pytest.mark.parametrize("version", ["2.10.0", "2.10.0+cu128", "2.14.1", "3.0.0a0+git1234"])
def test_torch_2_10_and_later_passes(version):
    require_safe_torch(version)


def test_unparseable_torch_version_is_a_user_error():
    with pytest.raises(UserError, match="cannot parse torch version 'nightly'"):
        require_safe_torch("nightly")


# ---------------------------------------------------------------- layouts that load
def loads_same(path, card, sd):
    model = load_model(path, card)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_plain_state_dict_loads(tmp_path, small_card, state_dict):
    torch.save(state_dict, tmp_path / "m.pt")
    loads_same(tmp_path / "m.pt", small_card, state_dict)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_training_checkpoint_dict_loads(tmp_path, small_card, state_dict, key):
    # What training scripts save: the weights under a key, beside optimizer state and counters.
    torch.save({key: state_dict, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "m.pth")
    loads_same(tmp_path / "m.pth", small_card, state_dict)


def test_dataparallel_module_prefix_is_stripped(tmp_path, small_card, state_dict):
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, tmp_path / "m.pt")
    assert all(not k.startswith("module.") for k in read_state_dict(tmp_path / "m.pt"))
    loads_same(tmp_path / "m.pt", small_card, state_dict)


def test_safetensors_checkpoint_loads(tmp_path, small_card, state_dict):
    from safetensors.torch import save_file

    save_file(state_dict, str(tmp_path / "m.safetensors"))
    loads_same(tmp_path / "m.safetensors", small_card, state_dict)


def test_legacy_non_zip_torch_file_loads(tmp_path, small_card, state_dict):
    torch.save(state_dict, tmp_path / "m.pt", _use_new_zipfile_serialization=False)
    loads_same(tmp_path / "m.pt", small_card, state_dict)


def test_fp16_checkpoint_is_loaded_as_float32(tmp_path, small_card, state_dict):
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", small_card)
    assert model.fc.weight.dtype == torch.float32


# ---------------------------------------------------------------- files that must not load
def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError) as e:
        read_state_dict(tmp_path / "nope.pt")
    assert_one_line(e, "nope.pt not found", "--checkpoint PATH")


def test_empty_checkpoint(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(UserError) as e:
        read_state_dict(tmp_path / "m.pt")
    assert_one_line(e, "is empty (0 bytes)", "re-download or re-export")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_checkpoint(tmp_path, state_dict, legacy):
    # An interrupted download: the first half of a real file.
    torch.save(state_dict, tmp_path / "full.pt", _use_new_zipfile_serialization=not legacy)
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError) as e:
        read_state_dict(tmp_path / "half.pt")
    assert_one_line(e, "half.pt is truncated or not a PyTorch file", "re-download or re-export")


def test_damaged_safetensors_checkpoint(tmp_path, state_dict):
    from safetensors.torch import save_file

    save_file(state_dict, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError) as e:
        read_state_dict(tmp_path / "half.safetensors")
    assert_one_line(e, "is not a readable safetensors file", "re-export")


class _Exploit:
    """Unpickling this would create the marker file: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "torch.save-legacy", "pickle.dump"])
def test_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, writer):
    marker, path = tmp_path / "PWNED", tmp_path / "evil.pt"
    payload = {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": _Exploit(marker)}
    if writer == "pickle.dump":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch.save")
    with pytest.raises(UserError) as e:
        read_state_dict(path)
    assert_one_line(e, "was refused", "would run code", "export model.state_dict() or a .safetensors file")
    # The reason names what was blocked, not torch's advice to retry with weights_only=False.
    assert "weights_only" not in str(e.value)
    if writer.startswith("torch.save"):
        assert "GLOBAL" in str(e.value) and "system" in str(e.value)  # os.system, the blocked call
    assert not marker.exists()


def test_garbage_bytes_are_a_user_error(tmp_path):
    # Used to escape as KeyError from the weights-only unpickler (fixed in models.py).
    (tmp_path / "m.pt").write_bytes(b"hello, this is not a checkpoint at all")
    with pytest.raises(UserError) as e:
        read_state_dict(tmp_path / "m.pt")
    assert_one_line(e, "is truncated or not a PyTorch file")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=64) | st.sampled_from([b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04"])
       .flatmap(lambda head: st.binary(max_size=48).map(lambda tail: head + tail)))
def test_arbitrary_bytes_raise_only_user_errors(tmp_path, data):
    path = tmp_path / "fuzz.pt"
    path.write_bytes(data)
    with pytest.raises(UserError):
        read_state_dict(path)


@pytest.mark.parametrize("obj", [torch.zeros(3), [torch.zeros(3)], {}, {"fc.weight": torch.zeros(2), "step": 3}],
                         ids=["tensor", "list", "empty-dict", "non-tensor-value"])
def test_checkpoint_without_a_state_dict_of_tensors(tmp_path, obj):
    torch.save(obj, tmp_path / "m.pt")
    with pytest.raises(UserError) as e:
        read_state_dict(tmp_path / "m.pt")
    assert_one_line(e, "does not hold a state dict of tensors", "save model.state_dict()")


# ---------------------------------------------------------------- state dicts that do not fit the card
def test_1000_class_checkpoint_against_a_10_class_card(tmp_path):
    torch.save(random_resnet18(make_card([f"c{i}" for i in range(1000)])).state_dict(), tmp_path / "imagenet.pt")
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "imagenet.pt", make_card([str(i) for i in range(10)]))
    assert_one_line(e, "has 1000 output classes", "has 10", "use the matching checkpoint or card")


def test_missing_and_unexpected_keys_are_named(tmp_path, small_card, state_dict):
    sd = {k: v for k, v in state_dict.items() if not k.startswith("layer4.1.bn2")}
    sd["head.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "m.pt", small_card)
    assert_one_line(e, "does not fit torchvision.models.resnet18", "missing 5 keys", "layer4.1.bn2.bias",
                    "unexpected 1 keys", "head.weight")


def test_wrong_shape_is_named(tmp_path, small_card, state_dict):
    sd = dict(state_dict)
    sd["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grayscale model
    torch.save(sd, tmp_path / "m.pt")
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "m.pt", small_card)
    assert_one_line(e, "conv1.weight has shape (64, 1, 7, 7)", "expects (64, 3, 7, 7)")


# ---------------------------------------------------------------- counters
def test_count_parameters_matches_torch_and_counts_zeros(small_card):
    model = random_resnet18(small_card)
    total, nonzero = count_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert nonzero == sum(int(p.count_nonzero()) for p in model.parameters())  # BN biases start at 0
    with torch.no_grad():
        model.fc.weight.zero_()
    assert count_parameters(model) == (total, nonzero - model.fc.weight.numel())


def test_count_macs_matches_the_published_resnet18_figure():
    # torchvision documents 1.81 GFLOPS (multiply-accumulates) for ResNet18 at 224x224, 1000 classes.
    card = make_card([f"c{i}" for i in range(1000)], input_size=(224, 224))
    assert count_macs(random_resnet18(card), (224, 224)) == pytest.approx(1.814e9, rel=0.002)
