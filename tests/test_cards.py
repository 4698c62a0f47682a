"""Model cards: the only source of preprocessing; every bad field is a one-line UserError."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import make_card
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.cards import ModelCard, card_from_dict, card_path_for, load_card
from compress.errors import UserError

VALID = {
    "architecture": "torchvision.models.resnet18",
    "architecture_kwargs": {"num_classes": 3},
    "input_size": [32, 48],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "classes": ["cat", "dog", "eel"],
    "metrics": {"top1": 0.9},
}


def test_valid_card_is_read_with_all_fields():
    card = card_from_dict(VALID, "c.json")
    assert card == ModelCard("torchvision.models.resnet18", 3, (32, 48), (0.485, 0.456, 0.406),
                             (0.229, 0.224, 0.225), ("cat", "dog", "eel"))
    assert card.metrics == {"top1": 0.9} and card.source == "c.json"


def test_num_classes_defaults_to_the_number_of_class_names():
    d = {k: v for k, v in VALID.items() if k != "architecture_kwargs"}
    assert card_from_dict(d).num_classes == 3


def test_card_round_trips_through_its_json_form():
    card = card_from_dict(VALID)
    again = card_from_dict(json.loads(json.dumps(card.to_json())))
    assert again == card and again.metrics == card.metrics


def test_load_card_reads_the_json_beside_the_checkpoint(tmp_path):
    ckpt = tmp_path / "model.pt"
    assert card_path_for(ckpt) == tmp_path / "model.json"
    card_path_for(ckpt).write_text(json.dumps(VALID))
    assert load_card(card_path_for(ckpt)).classes == ("cat", "dog", "eel")


def test_missing_card_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError, match=r"not found: put the card JSON beside the checkpoint .* or pass --card"):
        load_card(tmp_path / "nope.json")


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe garbage", ""])
def test_card_that_is_not_json_is_a_user_error(tmp_path, text):
    path = tmp_path / "card.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(UserError, match="is not valid JSON") as e:
        load_card(path)
    assert "\n" not in str(e.value)


BAD_FIELDS = [
    ({"architecture": "torchvision.models.resnet50"}, "architecture 'torchvision.models.resnet50' is not supported"),
    ({"architecture": None}, "is not supported"),
    ({"classes": []}, "'classes' must be a non-empty list"),
    ({"classes": "cat,dog,eel"}, "'classes' must be a non-empty list"),
    ({"classes": ["cat", 2, "eel"]}, "'classes' must be a non-empty list"),
    ({"architecture_kwargs": {"num_classes": 1000}}, r"num_classes \(1000\) does not match 3 class names"),
    ({"architecture_kwargs": {"num_classes": "3"}}, "does not match 3 class names"),
    ({"architecture_kwargs": {"num_classes": 3.0}}, "does not match 3 class names"),
    ({"input_size": [32]}, "'input_size' must be \\[height, width\\]"),
    ({"input_size": [4, 4]}, "integers from 8 to 4096"),
    ({"input_size": [32.0, 32]}, "integers from 8 to 4096"),
    ({"input_size": [True, 32]}, "integers from 8 to 4096"),
    ({"input_size": "32x32"}, "'input_size' must be"),
    ({"mean": [0.5, 0.5]}, "'mean' must be a list of 3 finite numbers"),
    ({"mean": [0.5, float("nan"), 0.5]}, "'mean' must be a list of 3 finite numbers"),
    ({"std": [0.2, "0.2", 0.2]}, "'std' must be a list of 3 finite numbers"),
    ({"std": [0.2, 0.0, 0.2]}, "'std' values must be positive"),
    ({"std": [0.2, -1, 0.2]}, "'std' values must be positive"),
    # These three used to escape as AttributeError / OverflowError, or slip through (fixed in cards.py).
    ({"architecture_kwargs": [3]}, "'architecture_kwargs' must be an object"),
    ({"mean": [10 ** 400, 0.5, 0.5]}, "'mean' must be a list of 3 finite numbers"),
    ({"classes": ["cat"], "architecture_kwargs": {"num_classes": True}}, "does not match 1 class names"),
]


@pytest.mark.parametrize("change,message", BAD_FIELDS, ids=[f"{next(iter(c))}-{i}" for i, (c, _) in enumerate(BAD_FIELDS)])
def test_bad_field_is_a_one_line_user_error_pointing_at_the_docs(change, message):
    with pytest.raises(UserError, match=message) as e:
        card_from_dict({**VALID, **change}, "my.json")
    assert str(e.value).startswith("model card my.json: ")
    assert "docs/model-card.md" in str(e.value) and "\n" not in str(e.value)


def test_card_that_is_not_an_object_is_a_user_error():
    with pytest.raises(UserError, match="must be a JSON object"):
        card_from_dict([VALID])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10 ** 300) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)
field_values = {
    "architecture": st.sampled_from(["torchvision.models.resnet18", "resnet18"]) | json_values,
    "architecture_kwargs": st.fixed_dictionaries({}, optional={"num_classes": st.integers(0, 4) | json_values})
    | json_values,
    "input_size": st.lists(st.integers(0, 5000) | json_values, max_size=3) | json_values,
    "mean": st.lists(st.floats() | st.integers() | json_values, max_size=4) | json_values,
    "std": st.lists(st.floats() | st.integers() | json_values, max_size=4) | json_values,
    "classes": st.lists(st.text(max_size=3) | json_values, max_size=4) | json_values,
    "metrics": json_values,
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.fixed_dictionaries({}, optional=field_values), drop=st.sets(st.sampled_from(sorted(VALID)), max_size=1))
def test_valid_card_with_arbitrary_fields_raises_only_user_errors(changes, drop):
    # Mutating a valid card (rather than drawing dicts from nothing) lets the fuzzing reach every check.
    d = {k: v for k, v in {**VALID, **changes}.items() if k not in drop}
    try:
        card = card_from_dict(d)
    except UserError as e:
        assert "\n" not in str(e)
        return
    # Whatever is accepted is a usable card.
    assert card.num_classes == len(card.classes) >= 1 and type(card.num_classes) is int
    assert all(8 <= s <= 4096 for s in card.input_size) and all(s > 0 for s in card.std)


@settings(max_examples=100, deadline=None)
@given(d=json_values)
def test_arbitrary_json_values_raise_only_user_errors(d):
    with pytest.raises(UserError):
        card_from_dict(d)


def test_normalize_scales_resizes_and_standardizes():
    card = make_card(["a", "b"], input_size=(16, 16), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = card.normalize(images)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.tensor(1.0)) and torch.allclose(x[:, 1], torch.tensor(3.0))
    assert torch.allclose(x[:, 2], torch.tensor(1.0))
    assert images.eq(255).all()  # the caller's uint8 batch is left alone
