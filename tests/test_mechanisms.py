"""cnnlib.mechanisms on CPU: lesions, path lengths, loss landscapes and shattered gradients,
each against a case whose answer is known, and that no measurement changes the model."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cnnlib.mechanisms import (
    _path_gradient,
    autocorrelation,
    deleted,
    filter_normalized_direction,
    gradient_by_path_length,
    gradient_trace,
    interpolation,
    lesion_random,
    lesion_single,
    loss_surface,
    path_length_distribution,
    residual_blocks,
    shattering_table,
)
from cnnlib.models.resnet import thin_net


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a small shared CPU a second intra-op thread only waits (measured 30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    """Random-normal images; 16x16 (the nets pool globally) costs a quarter of 32x32."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def net(shortcut: bool, depth: int = 8, seed: int = 0) -> nn.Module:
    """A thin net with non-trivial BatchNorm (random affine and running statistics), in train mode."""
    torch.manual_seed(seed)
    model = thin_net(depth, shortcut=shortcut)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def snapshot(model: nn.Module) -> dict:
    return dict(
        state={k: v.clone() for k, v in model.state_dict().items()},
        modes=[m.training for m in model.modules()],
        hooks=sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


def assert_same(before: dict, after: dict):
    assert before["modes"] == after["modes"]
    assert before["hooks"] == after["hooks"]
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"


def zero_branch(model: nn.Module, name: str) -> nn.Module:
    """A copy whose block ``name`` has a residual branch that outputs exactly zero."""
    model = copy.deepcopy(model)
    block = dict(model.named_modules())[name]
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    return model


# --- lesions ------------------------------------------------------------------------------------


def test_residual_blocks_in_forward_order():
    assert [n for n, _ in residual_blocks(thin_net(8, shortcut=True))] == ["layer1.0", "layer2.0", "layer3.0"]
    assert len(residual_blocks(thin_net(20, shortcut=False))) == 9
    with pytest.raises(ValueError, match="BasicBlock"):
        residual_blocks(nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["layer1.0", "layer2.0"])  # identity and option-A shortcut
def test_deleting_a_block_is_dropping_its_residual_branch(name):
    model, x = net(True), images(8)
    with deleted(model, [name]):
        out = logits(model, x)
    assert_close(out, logits(zero_branch(model, name), x), rtol=0, atol=0)
    assert not torch.equal(out, logits(model, x))


def test_deleting_a_plain_block_is_the_identity():
    model, x = net(False), images(8)
    with deleted(model, ["layer1.0"]):
        out = logits(model, x)
    reference = copy.deepcopy(model)
    reference.layer1[0] = nn.Identity()
    assert_close(out, logits(reference, x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="change the shape"):
        with deleted(model, ["layer2.0"]):
            pass
    with pytest.raises(ValueError, match="not blocks"):
        with deleted(model, ["stem"]):
            pass


def test_deleted_restores_the_model_even_after_an_exception():
    model, x = net(True).train(), images(8)
    before, out = snapshot(model), logits(copy.deepcopy(model), x)
    with pytest.raises(RuntimeError, match="boom"):
        with deleted(model, ["layer1.0", "layer3.0"]):
            raise RuntimeError("boom")
    assert_same(before, snapshot(model))
    assert_close(logits(copy.deepcopy(model), x), out, rtol=0, atol=0)


def test_lesion_single_of_a_zero_branch_keeps_the_intact_accuracy():
    x, y = images(16), labels(16)
    model = zero_branch(net(True), "layer2.0").train()
    before = snapshot(model)
    df = lesion_single(model, x, y, batch_size=10)
    assert_same(before, snapshot(model))
    assert list(df.columns) == ["block", "index", "downsample", "accuracy"]
    assert df["downsample"].tolist() == [False, True, True]
    intact = (logits(copy.deepcopy(model), x).argmax(1) == y).double().mean().item()
    assert df.attrs["intact"] == pytest.approx(intact)
    assert df.set_index("block").loc["layer2.0", "accuracy"] == pytest.approx(intact)


def test_lesion_single_of_a_plain_net_gives_nan_where_the_shape_changes():
    df = lesion_single(net(False), images(8, size=8), labels(8))
    assert df["accuracy"].isna().tolist() == [False, True, True]


def test_lesion_random_draws_reproducible_deletable_sets():
    x, y = images(8, size=8), labels(8)
    model = net(True, depth=14)  # 6 blocks
    df = lesion_random(model, x, y, ks=[1, 3, 6], draws=4, seed=3)
    assert len(df) == 3 * 4 and list(df.columns) == ["k", "draw", "blocks", "accuracy"]
    assert (df["blocks"].str.split(",").str.len() == df["k"]).all()
    assert df.loc[df["k"] == 6, "blocks"].nunique() == 1  # all six blocks, every draw
    assert df.equals(lesion_random(model, x, y, ks=[1, 3, 6], draws=4, seed=3))
    with pytest.raises(ValueError, match="deletable"):
        lesion_random(model, x, y, ks=[7])
    plain = lesion_random(net(False, depth=14), x, y, draws=2)  # 4 blocks keep their shape
    assert sorted(plain["k"].unique()) == [1, 2, 3, 4]
    assert not plain["blocks"].str.contains("layer2.0|layer3.0").any()


# --- path lengths -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 3, 9, 54])
def test_path_length_distribution_is_binomial(n):
    df = path_length_distribution(n)
    assert df["paths"].sum() == 2**n and df["fraction"].sum() == pytest.approx(1.0)
    assert df["paths"].tolist() == [math.comb(n, k) for k in range(n + 1)]


def test_path_gradients_sum_to_the_full_gradient():
    # With the ReLU masks fixed, the backward pass is linear: the 2^n path gradients add up.
    model, x, y = net(True), images(4), labels(4)
    full = _path_gradient(model, x, y, None)
    paths = [_path_gradient(model, x, y, set(s)) for k in range(4) for s in itertools.combinations(range(3), k)]
    assert_close(torch.stack(paths).sum(0), full, rtol=1e-4, atol=1e-6)
    assert not torch.equal(paths[0], full)


def test_gradient_by_path_length_one_row_per_length_and_model_unchanged():
    model = net(True).train()
    before = snapshot(model)
    df = gradient_by_path_length(model, images(4), labels(4), samples=2)
    assert_same(before, snapshot(model))
    assert all(p.grad is None for p in model.parameters())
    assert df["length"].tolist() == [0, 1, 2, 3] and (df["grad_norm"] > 0).all()
    assert df.loc[[0, 3], "grad_std"].tolist() == [0.0, 0.0]  # one path of length 0 and of length n
    with pytest.raises(ValueError, match="no shortcut"):
        gradient_by_path_length(net(False), images(4), labels(4))


# --- loss landscapes ----------------------------------------------------------------------------


def test_filter_normalized_direction_matches_filter_norms_and_ignores_bn_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    assert d.keys() == params.keys()
    for name in ("0.weight", "3.weight"):
        assert_close(d[name].flatten(1).norm(dim=1), params[name].detach().flatten(1).norm(dim=1))
    for name in ("0.bias", "1.weight", "1.bias", "3.bias"):
        assert torch.equal(d[name], torch.zeros_like(params[name]))
    again = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert all(torch.equal(d[k], again[k]) for k in d)


def test_loss_surface_is_the_loss_of_the_shifted_model():
    model, x, y = net(True).train(), images(16), labels(16)
    before = snapshot(model)
    d1 = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    df = loss_surface(model, x, y, d1, span=0.5, steps=3, batch_size=6)
    assert_same(before, snapshot(model))
    assert df["alpha"].tolist() == [-0.5, 0.0, 0.5]
    assert df["loss"].iloc[1] == pytest.approx(F.cross_entropy(logits(copy.deepcopy(model), x), y).item(), rel=1e-5)
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in shifted.named_parameters():
            p.add_(0.5 * d1[n])
    out = logits(shifted, x)
    assert df["loss"].iloc[2] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert df["accuracy"].iloc[2] == pytest.approx((out.argmax(1) == y).double().mean().item())


def test_loss_surface_2d_grid():
    model, x, y = net(True), images(8), labels(8)
    d1, d2 = (filter_normalized_direction(model, torch.Generator().manual_seed(s)) for s in (1, 2))
    df = loss_surface(model, x, y, d1, d2, steps=3)
    assert len(df) == 9 and list(df.columns) == ["alpha", "beta", "loss", "accuracy"]
    centre = df[(df["alpha"] == 0) & (df["beta"] == 0)]["loss"].item()
    assert centre == pytest.approx(loss_surface(model, x, y, d1, steps=3)["loss"].iloc[1])


def _recalibrated(model, x):
    """``model`` with its BatchNorm statistics gathered afresh on ``x`` (one batch, train mode, no gradient)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model


def test_interpolation_recomputes_batchnorm_statistics_at_every_point():
    init, trained = net(True, seed=0), net(True, seed=1).train()
    x, y = images(16), labels(16)
    before = snapshot(trained)
    momenta = [m.momentum for m in trained.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    df = interpolation(init.state_dict(), trained, x, y, steps=3)
    assert_same(before, snapshot(trained))  # the model is never written
    assert momenta == [m.momentum for m in trained.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert df["t"].tolist() == [0.0, 0.5, 1.0] and set(df["bn"]) == {"recomputed"}
    middle = copy.deepcopy(init)
    middle.load_state_dict(
        {k: (v + trained.state_dict()[k]) / 2 if v.is_floating_point() else v for k, v in init.state_dict().items()}
    )
    for model, row in ((init, 0), (middle, 1), (trained, 2)):  # each point with the statistics of its own weights
        expected = F.cross_entropy(logits(_recalibrated(model, x), x), y).item()
        assert df["loss"].iloc[row] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="lacks"):
        interpolation({}, trained, x, y)


# --- shattered gradients ------------------------------------------------------------------------


def test_gradient_trace_of_a_linear_model_is_constant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x0, x1 = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    trace = gradient_trace(model, x0, x1, points=10, output=2, batch_size=4)
    u = (x1 - x0).flatten() / (x1 - x0).norm()
    assert trace.shape == (10,)
    np.testing.assert_allclose(trace, float(model[1].weight[2].detach() @ u), rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_autocorrelation_of_known_traces():
    t = np.arange(400)
    sine = autocorrelation(np.sin(2 * np.pi * t / 20), max_lag=20)
    assert sine[0] == 1.0
    # r(k) = cos(2πk/P) (N - k)/N + O(1/N): at half and whole periods, -(1 - k/N) and 1 - k/N.
    np.testing.assert_allclose(sine, np.cos(2 * np.pi * np.arange(21) / 20), atol=0.06)
    assert sine[10] == pytest.approx(-(1 - 10 / 400)) and sine[20] == pytest.approx(1 - 20 / 400)
    assert autocorrelation(t)[1] > 0.99  # a constant slope
    noise = autocorrelation(np.random.default_rng(0).standard_normal(4000), max_lag=1)
    assert abs(noise[1]) < 3 / math.sqrt(4000)
    assert np.isnan(autocorrelation(np.ones(5))).all()
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(t, max_lag=400)


def test_shattering_table_one_row_per_depth_and_net():
    x0, x1 = images(2, size=8)
    state = torch.random.get_rng_state()
    df = shattering_table(depths=(8, 14), points=16, x0=x0, x1=x1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert list(df[["depth", "net"]].itertuples(index=False, name=None)) == [
        (8, "plain"),
        (8, "residual"),
        (14, "plain"),
        (14, "residual"),
    ]
    values = df[["lag1_autocorrelation", "lag4_autocorrelation"]].to_numpy()
    assert np.isfinite(values).all() and (np.abs(values) <= 1).all()
