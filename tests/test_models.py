"""Every registered model: shapes, gradients, parameter counts, and the four
originals against the structure the original report printed."""

import re
from pathlib import Path

import pytest
import torch
import torchinfo
from torch import nn

from cnnlib import create_model, list_models
from cnnlib.models import FAMILIES, family_of

PARAMS = {
    "seed_cnn": 62_278,
    "seed_resnet18": 11_184_650,
    "seed_densenet": 16_367_562,
    "seed_senet18": 11_260_354,
    "plainnet18": 11_000_138,
    "resnet18": 11_173_962,
    "se_resnet18": 11_263_042,
    "densenet121": 6_956_298,
    "plain20": 269_722,  # He et al. Table 6: 0.27M
    "plain56": 853_018,  # 0.85M
    "resnet20": 269_722,
    "resnet56": 853_018,
    "plain32": 464_154,  # 0.46M
    "plain44": 658_586,  # 0.66M
    "resnet32": 464_154,
    "resnet44": 658_586,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_the_sixteen_models_by_family():
    # the families come first, in report order (tests may register extra models after them)
    assert list_models()[:16] == [n for names in FAMILIES.values() for n in names]
    assert set(list_models()[:16]) == set(PARAMS)
    assert family_of("resnet56") == "degradation" and family_of("nope") is None


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        create_model("resnet19")


@pytest.mark.parametrize("name", list(PARAMS))  # every registered model of the study
def test_forward_backward_and_parameter_count(name):
    torch.manual_seed(0)
    model = create_model(name)
    assert model.__doc__ and (type(model).__module__.startswith("cnnlib.models"))
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters()), "a parameter got no gradient"
    assert n_params(model) == PARAMS[name]
    # the stages cover every parameter exactly once, stem first, head last
    owned = sum(n_params(getattr(model, s)) for s in model.stages)
    assert owned == n_params(model)


def test_num_classes_is_honoured():
    assert create_model("resnet20", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_plain_and_residual_twins_share_weights_shapes():
    """Option A shortcuts add no parameters: the twins differ only by the additions."""
    for plain, res in (("plain20", "resnet20"), ("plain56", "resnet56")):
        shapes = [p.shape for p in create_model(plain).parameters()]
        assert shapes == [p.shape for p in create_model(res).parameters()]


def test_degradation_family_without_batchnorm():
    model = create_model("plain56", norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_se_block_sits_before_the_residual_add():
    model = create_model("se_resnet18")
    block = model.layer2[0]
    seen = []
    block.attn.register_forward_hook(lambda m, i, o: seen.append(o))
    block.shortcut.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 64, 32, 32)
    out = block.eval()(x)
    torch.testing.assert_close(out, torch.relu(seen[0] + seen[1]))


def leaf_rows(name: str, skip=()) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer type, output shape without batch, parameters) for every leaf layer torchinfo lists."""
    stats = torchinfo.summary(create_model(name), input_size=(1, 3, 32, 32), depth=20, verbose=0)
    return [
        (row.class_name, tuple(row.output_size[1:]), row.num_params)
        for row in stats.summary_list
        if row.is_leaf_layer and row.class_name not in ("Flatten", "ReLU", *skip)
    ]


def test_seed_cnn_reproduces_the_original_torchsummary_table():
    original = [
        ("Conv2d", (6, 28, 28), 456),
        ("MaxPool2d", (6, 14, 14), 0),
        ("Conv2d", (16, 10, 10), 2_416),
        ("MaxPool2d", (16, 5, 5), 0),
        ("Conv2d", (16, 5, 5), 272),
        ("Linear", (120,), 48_120),
        ("Linear", (84,), 10_164),
        ("Linear", (10,), 850),
    ]
    assert leaf_rows("seed_cnn") == original


def _original_resnet18_rows():
    """The original's torchsummary table (shortcut convs were invisible to it)."""
    rows = [("Conv2d", (64, 16, 16), 9_472), ("BatchNorm2d", (64, 16, 16), 128),
            ("MaxPool2d", (64, 8, 8), 0)]  # fmt: skip
    conv = {64: 36_928, 128: 147_584, 256: 590_080, 512: 2_359_808}
    first = {128: 73_856, 256: 295_168, 512: 1_180_160}  # the stride-2 conv of each stage
    for c, size in ((64, 8), (128, 4), (256, 2), (512, 1)):
        for i in range(4):
            params = first[c] if i == 0 and c in first else conv[c]
            rows += [("Conv2d", (c, size, size), params), ("BatchNorm2d", (c, size, size), 2 * c)]
    return rows + [("AdaptiveAvgPool2d", (512, 1, 1), 0), ("Linear", (10,), 5_130)]


def test_seed_resnet18_contains_every_original_row_plus_three_shortcuts():
    rows = leaf_rows("seed_resnet18")
    shortcuts = [r for r in rows if r[0] == "Conv2d" and r[2] in (8_320, 33_024, 131_584)]
    assert shortcuts == [
        ("Conv2d", (128, 4, 4), 8_320),
        ("Conv2d", (256, 2, 2), 33_024),
        ("Conv2d", (512, 1, 1), 131_584),
    ]
    assert [r for r in rows if r not in shortcuts] == _original_resnet18_rows()


def test_seed_resnet18_blocks_do_not_share_weights():
    model = create_model("seed_resnet18")
    assert model.layer1[0].body[0].weight is not model.layer1[1].body[0].weight
    # the fixed shortcut is a module, so two forward passes agree
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))


_LEAF = re.compile(r"\b(?:Conv2d|BatchNorm2d|MaxPool2d|ReLU|Linear)\((?:[^()]|\([^()]*\))*\)")


def test_seed_densenet_matches_the_printed_structure():
    printed = (Path(__file__).parent / "data" / "seed_densenet_printed.txt").read_text()
    printed = re.sub(r",\n\s*", ", ", printed)  # undo the report's line wrapping
    expected = _LEAF.findall(printed)
    model = create_model("seed_densenet")
    leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, nn.Flatten)]
    # newer PyTorch prints BatchNorm2d's bias flag, which the original's version did not
    ours = [repr(m).replace(", bias=True", "") if isinstance(m, nn.BatchNorm2d) else repr(m) for m in leaves]
    assert len(expected) == 4 + 6 * 6 + 2 + 6 * 6 + 3
    assert ours == expected


def test_seed_senet18_parameter_count_and_shapes():
    model = create_model("seed_senet18")
    assert n_params(model) == 11_260_354
    assert model.layer4[0].fc1.out_channels == 512 // 16
    assert model.layer2[0].shortcut is not None and model.layer2[1].shortcut is None
