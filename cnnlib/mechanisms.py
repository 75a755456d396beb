"""Why skip connections help: four mechanisms, measured on trained or fresh networks.

* **Lesions** (Veit, Wilber & Belongie, "Residual networks behave like ensembles of relatively shallow networks",
  NeurIPS 2016): delete one block, or k random blocks, at test time. A ResNet's accuracy degrades smoothly; a plain net
  collapses.
* **Path lengths** (Veit et al., Fig. 6): an n-block ResNet unrolls into 2^n paths whose lengths follow
  Binomial(n, 1/2); the gradient that flows through paths of each length shows that training relies on the short ones.
* **Loss landscapes** (Li, Xu, Taylor, Studer & Goldstein, "Visualizing the loss landscape of neural nets", NeurIPS
  2018): the loss along filter-normalised random directions around the trained weights; and the straight line from the
  initial to the trained weights (Goodfellow, Vinyals & Saxe, "Qualitatively characterizing neural network optimization
  problems", ICLR 2015).
* **Shattered gradients** (Balduzzi, Frean, Leary, Lewis, Ma & McWilliams, "The shattered gradients problem: if resnets
  are the answer, then what is the question?", ICML 2017): along a line of inputs, the input gradient of a deep plain
  net decorrelates like white noise; a ResNet's stays autocorrelated.

Assumed model structure: the blocks are ``cnnlib.models.resnet.BasicBlock``, whose output is
``relu(attn(...) + shortcut(x))``; ``attn``'s output is the residual branch F(x), ``shortcut`` is None in a plain block
(output ``relu(F(x))``), and ``conv1`` carries the block's stride and input channels, ``conv2`` its output channels.

Every function takes a model and tensors on the model's device and is a pure computation: evaluation runs in eval mode
(BatchNorm uses its running statistics) under ``no_grad`` except where an input gradient is needed (then only
``torch.autograd.grad`` is used, so ``.grad`` is never touched). Forward hooks are always removed, each module's
train/eval flag is restored, and perturbed weights are passed through ``torch.func.functional_call``, so the model's
parameters and buffers are never written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .diagnostics import _forward_hooks, _mode
from .models.resnet import BasicBlock, thin_net


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500,
              tensors: dict[str, Tensor] | None = None) -> tuple[float, float]:  # fmt: skip
    """(mean cross-entropy, accuracy) on (x, y) in eval mode, with ``tensors`` (parameters and/or
    buffers by name) swapped in through ``functional_call`` if given. Sums stay on the device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    with _mode(model, False), torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            logits = model(xb) if tensors is None else functional_call(model, tensors, (xb,))
            loss += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum().double()
    total, right = torch.stack([loss, correct]).tolist()  # one device sync
    return total / len(x), right / len(x)


# --- lesions (Veit et al. 2016) -----------------------------------------------------------------


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's ``BasicBlock``s (residual or plain) in forward order, with qualified names
    (e.g. 'layer2.0'). Registration order is the forward order in every cnnlib ResNet."""
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BasicBlock)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no cnnlib.models.resnet.BasicBlock; use a plain/residual net "
                         "built from it (plain20/56, resnet20/56, thin_net(depth, shortcut=...), resnet18, ...)")
    return blocks


def _downsamples(block: nn.Module) -> bool:
    """Whether the block changes its input's shape (stride or channel count)."""
    stride = tuple(block.conv1.stride)
    return stride != (1,) * len(stride) or block.conv1.in_channels != block.conv2.out_channels


def _deletable(block: nn.Module) -> bool:
    """A residual block always (its shortcut remains); a plain block only if it keeps the shape."""
    return block.shortcut is not None or not _downsamples(block)


def _skip(block: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    """Forward hook replacing a block's output by what it computes with its residual branch F = 0: relu(shortcut(x)) for
    a residual block (identity or option-A/B downsampling shortcut), x for a shape-preserving plain block."""
    x = inputs[0]
    return x if block.shortcut is None else F.relu(block.shortcut(x))


@contextmanager
def deleted(model: nn.Module, names: Iterable[str]) -> Iterator[nn.Module]:
    """Within the block, the named blocks are deleted (Veit et al.): a residual block's output is
    its shortcut path alone, a plain block is the identity. Implemented with forward hooks, which
    are removed on exit, even on an exception. Raises ValueError for a name that is not a block
    or a plain block that changes the shape (it has no shortcut to fall back on)."""
    blocks = dict(residual_blocks(model))
    names = list(names)
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise ValueError(f"not blocks of the model: {unknown}; choose from {list(blocks)}")
    fixed = [n for n in names if not _deletable(blocks[n])]
    if fixed:
        raise ValueError(f"plain blocks that change the shape cannot be deleted: {fixed}")
    with _forward_hooks([(blocks[n], _skip) for n in names]):
        yield model


def lesion_single(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500) -> pd.DataFrame:
    """Accuracy on (x, y) with each single block deleted (Veit et al. Fig. 3).

    Columns: ``block``, ``index`` (0-based forward order), ``downsample`` (the block changes
    the shape), ``accuracy``. A shape-changing plain block cannot be deleted: its accuracy is
    NaN. ``df.attrs["intact"]`` holds the accuracy of the intact model.
    """
    rows = []
    for i, (name, block) in enumerate(residual_blocks(model)):
        accuracy = math.nan
        if _deletable(block):
            with deleted(model, [name]):
                accuracy = _evaluate(model, x, y, batch_size)[1]
        rows.append((name, i, _downsamples(block), accuracy))
    df = pd.DataFrame(rows, columns=["block", "index", "downsample", "accuracy"])
    df.attrs["intact"] = _evaluate(model, x, y, batch_size)[1]
    return df


def lesion_random(model: nn.Module, x: Tensor, y: Tensor, *, ks: Iterable[int] | None = None, draws: int = 10,
                  seed: int = 0, batch_size: int = 500) -> pd.DataFrame:  # fmt: skip
    """Accuracy with k randomly chosen deletable blocks deleted together (Veit et al. Fig. 5a).

    For each k in ``ks`` (default 1..min(10, number of deletable blocks)) and each of ``draws``
    draws, k distinct blocks are sampled among the deletable ones with a ``torch.Generator``
    seeded by ``seed``. Columns: ``k``, ``draw``, ``blocks`` (the deleted names, comma-separated),
    ``accuracy``. Raises ValueError for a k beyond the number of deletable blocks.
    """
    names = [n for n, b in residual_blocks(model) if _deletable(b)]
    ks = list(range(1, min(10, len(names)) + 1) if ks is None else ks)
    bad = [k for k in ks if not 0 <= k <= len(names)]
    if bad:
        raise ValueError(f"k must lie in 0..{len(names)} (the model's deletable blocks), got {bad}")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for k in ks:
        for draw in range(draws):
            picked = [names[i] for i in sorted(torch.randperm(len(names), generator=g)[:k].tolist())]
            with deleted(model, picked):
                rows.append((k, draw, ",".join(picked), _evaluate(model, x, y, batch_size)[1]))
    return pd.DataFrame(rows, columns=["k", "draw", "blocks", "accuracy"])


# --- path lengths (Veit et al. 2016, Fig. 6) ----------------------------------------------------


def path_length_distribution(n_blocks: int) -> pd.DataFrame:
    """The 2^n paths of an n-block ResNet by length k (residual branches taken): C(n, k) of
    each. Columns: ``length``, ``paths``, ``fraction`` (of all 2^n paths)."""
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
    paths = [math.comb(n_blocks, k) for k in range(n_blocks + 1)]
    fraction = [p / 2**n_blocks for p in paths]
    return pd.DataFrame({"length": range(n_blocks + 1), "paths": paths, "fraction": fraction})


def _detach(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    return output.detach()


def _path_gradient(model: nn.Module, x: Tensor, y: Tensor, active: set[int] | None) -> Tensor:
    """Gradient of the summed cross-entropy w.r.t. the first block's input h, (B, C, H, W), in eval mode, through the
    one path that takes the residual branch of exactly the blocks in ``active`` and the shortcut of all others (None:
    through every path, the full gradient).

    The forward pass is unchanged; the backward pass is cut by detaching the shortcut output of the active blocks and
    the branch output (``attn``) of the others. The ReLU after each addition lies on every path and keeps its mask.
    """
    blocks = [b for _, b in residual_blocks(model)]
    captured: list[Tensor] = []

    def capture(module, inputs):
        captured.append(inputs[0].detach().requires_grad_(True))
        return (captured[-1], *inputs[1:])

    cuts = [] if active is None else [(b.shortcut if i in active else b.attn, _detach) for i, b in enumerate(blocks)]
    handle = blocks[0].register_forward_pre_hook(capture)
    try:
        with _mode(model, False), torch.enable_grad(), _forward_hooks(cuts):
            loss = F.cross_entropy(model(x).float(), y, reduction="sum")  # sum: per-image gradients
    finally:
        handle.remove()
    return torch.autograd.grad(loss, captured[0])[0]


def gradient_by_path_length(model: nn.Module, x: Tensor, y: Tensor, *, samples: int = 10,
                            lengths: Iterable[int] | None = None, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Gradient magnitude through paths of each length k (Veit et al. Fig. 6b), for a residual net.

    For each k (default 0..n) and each of ``samples`` draws, k of the n blocks are sampled (``torch.Generator`` seeded
    by ``seed``); the gradient is back-propagated through their residual branches only and through the other blocks'
    shortcuts only, i.e. along a single path of length k (``_path_gradient``), and measured at the first block's input
    (the stem output, common to all paths). Eval mode, so images are independent: ``grad_norm`` is the mean over draws
    of the mean over images of each image's own gradient norm (per-image, so it does not depend on the batch size);
    ``grad_std`` its std over draws. The cost is (n + 1) x samples forward-backward passes of x: pass a small batch.
    Raises ValueError for a net with plain blocks (it has a single path).
    """
    blocks = residual_blocks(model)
    plain = [n for n, b in blocks if b.shortcut is None]
    if plain:
        raise ValueError(f"path lengths need residual blocks; these blocks have no shortcut: {plain}")
    n = len(blocks)
    lengths = list(range(n + 1) if lengths is None else lengths)
    bad = [k for k in lengths if not 0 <= k <= n]
    if bad or samples < 1:
        raise ValueError(f"lengths must lie in 0..{n} and samples be >= 1, got {bad} and {samples}")
    g = torch.Generator().manual_seed(seed)
    stats = []
    for k in lengths:
        norms = []
        for _ in range(samples):
            active = set(torch.randperm(n, generator=g)[:k].tolist())
            norms.append(_path_gradient(model, x, y, active).flatten(1).norm(dim=1).mean())
        norms = torch.stack(norms).double()
        stats.append(torch.stack([norms.mean(), norms.std(unbiased=False)]))
    grad = torch.stack(stats).cpu().numpy()  # (len(lengths), 2), one device sync
    return pd.DataFrame({"length": lengths, "grad_norm": grad[:, 0], "grad_std": grad[:, 1]})


# --- loss landscapes (Li et al. 2018; Goodfellow et al. 2015) -----------------------------------


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, Tensor]:
    """A Gaussian random direction, normalised filter by filter (Li et al. section 4).

    Same names and shapes as ``model.named_parameters()``. For every parameter of two or more dimensions
    (conv and linear weights) each filter, the slice of one output channel/unit, is rescaled to the norm of the model's
    corresponding filter. One-dimensional parameters (biases, BatchNorm weights and biases) get a zero direction, as in
    the paper. The numbers are drawn on ``generator``'s device, so a CPU generator gives the same direction on any
    device.
    """
    direction = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            direction[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, device=generator.device, dtype=p.dtype).to(p.device)
        scale = p.detach().flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)  # (C_out,)
        direction[name] = d * scale.view(-1, *[1] * (p.dim() - 1))
    return direction


def loss_surface(model: nn.Module, x: Tensor, y: Tensor, d1: dict[str, Tensor], d2: dict[str, Tensor] | None = None,
                 *, span: float = 1.0, steps: int = 11, batch_size: int = 500) -> pd.DataFrame:  # fmt: skip
    """Loss and accuracy at θ + α d1 (+ β d2) for α (and β) in linspace(-span, span, steps).

    Eval mode: BatchNorm uses its trained running statistics (unperturbed; they are buffers, not parameters). Parameters
    missing from a direction are not moved. Columns: ``alpha`` (``beta`` if d2 is given: a steps x steps grid,
    alpha-major), ``loss`` (mean cross-entropy), ``accuracy``. The model itself is never written: the shifted weights go
    through ``functional_call``.
    """
    theta = {n: p.detach() for n, p in model.named_parameters()}
    grid = np.linspace(-span, span, steps).tolist()
    betas: list[float | None] = [None] if d2 is None else grid
    rows = []
    for a in grid:
        for b in betas:
            params = {}
            for n, p in theta.items():
                q = p + a * d1[n] if n in d1 else p
                params[n] = q + b * d2[n] if b is not None and n in d2 else q
            rows.append((a, *([] if b is None else [b]), *_evaluate(model, x, y, batch_size, params)))
    columns = ["alpha", "loss", "accuracy"] if d2 is None else ["alpha", "beta", "loss", "accuracy"]
    return pd.DataFrame(rows, columns=columns)


def interpolation(model_from_state: dict[str, Tensor], model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 11,
                  batch_size: int = 500) -> pd.DataFrame:  # fmt: skip
    """Loss and accuracy along θ(t) = (1 - t) θ_init + t θ_trained, t in linspace(0, 1, steps) (Goodfellow et al. 2015),
    with θ_init = ``model_from_state`` (a state_dict, e.g. saved at initialisation) and θ_trained = ``model``'s state.

    BatchNorm's running statistics belong to the weights they were gathered with: interpolated like the weights they
    describe no point between the ends (a net in eval mode with them sits near chance however good its weights). So at
    each θ(t) they are recomputed, as after training (Izmailov et al. 2018's SWA does the same): reset, then one pass
    over ``x`` in train mode without gradients, their cumulative average over its batches (momentum None); then θ(t) is
    evaluated in eval mode on ``x``. At t = 1 the trained statistics are replaced by these too. Columns: ``t``,
    ``loss``, ``accuracy``, and ``bn`` ("recomputed": how the statistics were had).
    """
    end = model.state_dict()
    missing = sorted(end.keys() - model_from_state.keys())
    if missing:
        raise ValueError(f"model_from_state lacks these entries of the model's state_dict: {missing}")
    start = {k: model_from_state[k].to(v.device) for k, v in end.items()}
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    momenta = {n: m.momentum for n, m in norms.items()}
    rows = []
    try:
        for m in norms.values():
            m.momentum = None  # a cumulative average over the pass's batches
        for t in np.linspace(0.0, 1.0, steps).tolist():
            state = {k: (1 - t) * start[k] + t * v if v.is_floating_point() else v.clone() for k, v in end.items()}
            for n in norms:  # fresh statistics: gathered below with these weights
                state[f"{n}.running_mean"].zero_()
                state[f"{n}.running_var"].fill_(1.0)
                state[f"{n}.num_batches_tracked"].zero_()
            with _mode(model, True), torch.no_grad():
                for i in range(0, len(x), batch_size):
                    functional_call(model, state, (x[i : i + batch_size],))  # updates the statistics in state
            rows.append((t, *_evaluate(model, x, y, batch_size, state)))
    finally:
        for n, m in norms.items():
            m.momentum = momenta[n]
    return pd.DataFrame(rows, columns=["t", "loss", "accuracy"]).assign(bn="recomputed")


# --- shattered gradients (Balduzzi et al. 2017) -------------------------------------------------


def gradient_trace(model: nn.Module, x0: Tensor, x1: Tensor, *, points: int = 256, output: int = 0,
                   batch_size: int = 256) -> np.ndarray:  # fmt: skip
    """The input gradient along the line x(s) = (1 - s) x0 + s x1, s in linspace(0, 1, points).

    ``x0`` and ``x1`` are single inputs without a batch dimension, e.g. (3, 32, 32). For each point, the gradient of
    logit ``output`` w.r.t. the input, projected on the line's unit direction (x1 - x0) / ||x1 - x0||: one float64 per
    point, shape (points,).

    Eval mode, so the points are independent (train-mode BatchNorm would couple them through the batch statistics). Note
    that a freshly initialised net's eval-mode BatchNorm has running mean 0 and variance 1, i.e. it is (nearly) the
    identity: at initialisation the trace is that of the un-normalised He-initialised net, the setting of Balduzzi et
    al.'s analysis of feedforward nets and resnets. Points are processed ``batch_size`` at a time.
    """
    delta = x1 - x0
    u = delta / delta.norm()
    s = torch.linspace(0, 1, points, device=x0.device, dtype=x0.dtype).view(-1, *[1] * x0.dim())
    traces = []
    with _mode(model, False), torch.enable_grad():
        for i in range(0, points, batch_size):
            xs = (x0 + s[i : i + batch_size] * delta).requires_grad_(True)  # (b, *x0.shape)
            (g,) = torch.autograd.grad(model(xs)[:, output].sum(), xs)
            traces.append((g * u).flatten(1).sum(dim=1))
    return torch.cat(traces).detach().double().cpu().numpy()


def autocorrelation(trace: Sequence[float] | np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Normalised autocorrelation r(k) = Σ_t a_t a_(t+k) / Σ_t a_t², a = trace - mean, for
    k = 0..max_lag (default len - 1); r(0) = 1 and |r(k)| <= 1. The biased (1/N) estimator, as
    usual for a correlogram. A constant trace has no defined autocorrelation: all NaN."""
    a = np.asarray(trace, dtype=np.float64).ravel()
    n = len(a)
    max_lag = n - 1 if max_lag is None else max_lag
    if not 0 <= max_lag < n:
        raise ValueError(f"max_lag must lie in 0..{n - 1} for a trace of {n} points, got {max_lag}")
    a = a - a.mean()
    var = a @ a
    if var == 0:
        return np.full(max_lag + 1, np.nan)
    return np.array([a[: n - k] @ a[k:] for k in range(max_lag + 1)]) / var


def shattering_table(depths: Iterable[int] = (8, 20, 56), *, points: int = 256, seed: int = 0,
                     x0: Tensor | None = None, x1: Tensor | None = None,
                     device: str | torch.device = "cpu") -> pd.DataFrame:  # fmt: skip
    """Lag-1 and lag-4 autocorrelation of the gradient traces of freshly initialised
    ``thin_net(depth, shortcut=False / True)`` (Balduzzi et al.: shattering grows with depth in plain nets, much less in
    resnets).

    The plain and residual nets of one depth are built from the same seed, so they have the same weights and differ only
    by the additions (option-A shortcuts add no parameters). Without ``x0``/``x1``, two standard-normal 3x32x32 images
    drawn from ``seed``. Logit 0, eval mode (see ``gradient_trace``). Columns: ``depth``, ``net`` ('plain'/'residual'),
    ``lag1_autocorrelation``, ``lag4_autocorrelation``. Builds the nets on ``device``.
    """
    if points < 5:
        raise ValueError(f"points must be >= 5 for a lag-4 autocorrelation, got {points}")
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 32, 32, generator=g) if x0 is None else x0
    x1 = torch.randn(3, 32, 32, generator=g) if x1 is None else x1
    rows = []
    for depth in depths:
        for net, shortcut in (("plain", False), ("residual", True)):
            with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left alone
                torch.manual_seed(seed)
                model = thin_net(depth, shortcut=shortcut).to(device)
            trace = gradient_trace(model, x0.to(device), x1.to(device), points=points)
            r = autocorrelation(trace, max_lag=4)
            rows.append((depth, net, r[1], r[4]))
    return pd.DataFrame(rows, columns=["depth", "net", "lag1_autocorrelation", "lag4_autocorrelation"])
