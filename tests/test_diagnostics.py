"""cnnlib.diagnostics on CPU: hand-computed gradients, layer order, response statistics,
and that no measurement changes the model."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cnnlib import create_model
from cnnlib.data import DeviceLoader
from cnnlib.diagnostics import gradient_norms, response_std_over_loader


def images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    """Random-normal images; 16x16 (the nets pool globally) costs a quarter of 32x32."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict:
    """Everything a measurement must leave alone: state (params + BN buffers), .grad, modes."""
    return dict(
        state={k: v.clone() for k, v in model.state_dict().items()},
        grad={n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        modes=[m.training for m in model.modules()],
    )


def assert_same(before: dict, after: dict):
    assert before["modes"] == after["modes"]
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"
    for n, g in before["grad"].items():
        h = after["grad"][n]
        assert (g is None and h is None) or torch.equal(g, h), f"{n}.grad changed"


# --- gradient_norms ---------------------------------------------------------------------------


def test_gradient_norms_match_hand_computed_gradients():
    # logits = W2 relu(W1 x), mean cross-entropy; gradients written out without autograd.
    w1 = torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.5, -0.5]])  # (2, 3)
    w2 = torch.tensor([[1.0, -2.0], [0.5, 0.75]])  # (2, 2)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w1)
        model[2].weight.copy_(w2)
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0], [-1.0, 0.0, 1.0], [2.0, 1.0, 0.5]])  # (4, 3)
    y = torch.tensor([0, 1, 1, 0])

    z = x @ w1.T  # (4, 2) pre-activation, mixed signs
    h = z.clamp_min(0)
    p = torch.softmax(h @ w2.T, dim=1)
    dlogits = (p - F.one_hot(y, 2).float()) / len(x)  # d mean-CE / d logits
    g2 = dlogits.T @ h  # (2, 2)
    g1 = ((dlogits @ w2) * (z > 0)).T @ x  # (2, 3)
    assert 0 < (z > 0).float().mean() < 1, "the ReLU must matter"

    df = gradient_norms(model, x, y)
    assert list(df.columns) == ["layer", "index", "kind", "grad_norm", "weight_norm", "relative"]
    assert list(df["layer"]) == ["0", "2"] and list(df["index"]) == [0, 1]
    assert list(df["kind"]) == ["linear", "linear"]
    expected = torch.stack([g1.norm(), g2.norm()]).double()
    assert_close(torch.tensor(df["grad_norm"].values), expected, rtol=1e-5, atol=1e-7)
    assert_close(torch.tensor(df["weight_norm"].values), torch.stack([w1.norm(), w2.norm()]).double())
    assert_close(torch.tensor(df["relative"].values), expected / torch.tensor(df["weight_norm"].values))
    assert df.attrs["loss"] == pytest.approx(F.cross_entropy(h @ w2.T, y).item(), rel=1e-6)

    # a custom loss: mean squared error against a target, d/d logits = 2 (logits - t) / numel
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [2.0, -1.0]])
    dlogits = 2 * (h @ w2.T - t) / t.numel()
    g2, g1 = dlogits.T @ h, ((dlogits @ w2) * (z > 0)).T @ x
    df = gradient_norms(model, x, t, loss_fn=F.mse_loss)
    assert_close(torch.tensor(df["grad_norm"].values), torch.stack([g1.norm(), g2.norm()]).double())


def test_gradient_norms_equal_backward_on_a_copy_with_train_mode_batchnorm():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()  # measured in train mode all the same
    x, y = images(4), labels(4)
    ref = copy.deepcopy(model).train()
    F.cross_entropy(ref(x), y).backward()
    expected = [m.weight.grad.norm().item() for m in ref.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    df = gradient_norms(model, x, y)
    assert df["grad_norm"].tolist() == pytest.approx(expected, rel=1e-4)
    # eval-mode BN (running statistics) gives other gradients
    assert not gradient_norms(model, x, y, train_mode=False)["grad_norm"].equals(df["grad_norm"])


@pytest.mark.parametrize("training", [True, False])
def test_gradient_norms_leave_the_model_unchanged(training):
    torch.manual_seed(0)
    model = create_model("resnet20").train(training)
    x, y = images(4), labels(4)
    if not training:  # also: existing gradients and non-default BN statistics survive
        F.cross_entropy(model.train()(x), y).backward()
        model.eval()
    model.layer1[0].bn1.train()  # a mixed-mode model keeps its mix
    before = snapshot(model)
    assert all(g is None for g in before["grad"].values()) == training
    for train_mode in (True, False):
        gradient_norms(model, x, y, train_mode=train_mode)
        assert_same(before, snapshot(model))


def test_gradient_norms_in_forward_order():
    resnet20 = create_model("resnet20")
    df = gradient_norms(resnet20, images(2), labels(2))
    assert len(df) == 20 and df["kind"].tolist().count("conv") == 19 and df["kind"].tolist().count("linear") == 1
    names = list(df["layer"])
    assert names[:3] == ["stem.0", "layer1.0.conv1", "layer1.0.conv2"] and names[-1] == "head.2"
    plain56 = list(gradient_norms(create_model("plain56"), images(2), labels(2))["layer"])
    assert len(plain56) == 56 and plain56[0] == "stem.0" and plain56[-1] == "head.2"

    # works without .stages, and orders by actual calls
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.late, self.early = nn.Linear(4, 2), nn.Linear(3, 4)

        def forward(self, x):
            return self.late(self.early(x))

    model = Backwards()
    assert list(gradient_norms(model, torch.randn(2, 3), torch.tensor([0, 1]))["layer"]) == ["early", "late"]


# --- response_std_over_loader -----------------------------------------------------------------


def responses(model: nn.Module, x: torch.Tensor):
    return response_std_over_loader(model, [(x, None)])


def test_responses_read_the_branch_before_the_addition():
    torch.manual_seed(0)
    model = create_model("resnet20")
    x = images(2)
    df = responses(model, x)
    assert list(df.columns) == ["block", "index", "std"]
    assert df["block"].tolist() == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert df["index"].tolist() == list(range(9)) and (df["std"] > 0).all()

    # the branch F(x) of layer1.0, computed by hand in eval mode
    model.eval()
    with torch.no_grad():
        b = model.layer1[0]
        branch = b.bn2(b.conv2(F.relu(b.bn1(b.conv1(model.stem(x))))))
    model.train()
    assert df["std"].iloc[0] == pytest.approx(branch.std().item(), rel=1e-5)

    # zero the second BN's scale: F(x) = BN bias = 0, while the block's output is not 0
    block = model.layer2[1]
    with torch.no_grad():
        block.bn2.weight.zero_()
    before = snapshot(model)
    df = responses(model, x).set_index("block")["std"]
    assert_same(before, snapshot(model))
    assert df["layer2.1"] == 0 and (df.drop("layer2.1") > 0).all()
    model.eval()
    with torch.no_grad():
        assert block(model.layer2[0](model.layer1(model.stem(x)))).std().item() > 0
    model.train()


def test_responses_count_blocks_of_plain_and_residual_nets():
    assert len(responses(create_model("resnet56"), images(1))) == 27
    plain = responses(create_model("plain20"), images(1))
    assert len(plain) == 9 and (plain["std"] > 0).all()
    with pytest.raises(ValueError, match="no cnnlib.models.resnet.BasicBlock"):
        responses(create_model("seed_cnn"), images(1))


def test_response_std_over_loader_pools_all_batches(synthetic):
    torch.manual_seed(0)
    model = create_model("resnet20")
    x, y = synthetic.test_x[:20], synthetic.test_y[:20]
    loader = DeviceLoader(x, y, batch_size=10, mean=synthetic.mean, std=synthetic.std, train=False)
    whole = torch.cat([xb for xb, _ in loader])
    pooled = response_std_over_loader(model, loader)
    # eval-mode responses are per image, so pooling batches = one batch of all images
    assert pooled["std"].tolist() == pytest.approx(responses(model, whole)["std"].tolist(), rel=1e-6)
    first = response_std_over_loader(model, loader, max_batches=1)
    assert first["std"].tolist() == pytest.approx(responses(model, whole[:10])["std"].tolist(), rel=1e-6)


# --- the science at initialisation ------------------------------------------------------------


def first_over_last(name: str, norm: bool) -> float:
    torch.manual_seed(0)  # plain56 and resnet56 then get identical weights
    g = gradient_norms(create_model(name, norm=norm), images(8), labels(8))["grad_norm"]  # 16x16
    return g.iloc[0] / g.iloc[-1]


def test_gradients_at_initialisation_explode_towards_the_input_only_in_the_plain_bn_net():
    """First-layer / last-layer gradient norm at He initialisation, batch-statistics BN.

    Measured over seeds 0-4: plain56 with BN 590-3100 on 8-64 random images (32x32 or 16x16)
    (105-261 on 128 CIFAR-10 images), resnet56 with BN 0.15-1.5 (0.08-0.15): in the deep plain BN net
    the gradient grows towards the input (cf. Yang et al., ICLR 2019); it does not vanish.
    Without BN, He init keeps plain56's ratio at 0.17-1.5 (0.06-0.43 on CIFAR-10): no
    exponential vanishing (a factor 0.8 per layer would give 4e-6 over 56 layers).
    """
    plain, res = first_over_last("plain56", True), first_over_last("resnet56", True)
    assert plain > 50 and res < 3 and plain > 100 * res
    assert 0.01 < first_over_last("plain56", False) < 100
