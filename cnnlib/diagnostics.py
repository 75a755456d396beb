"""Measurements of a network that leave the network unchanged.

Why deep plain networks are hard to train, and what skip connections change, can be read off these quantities:

* **Per-layer gradient norms** (``gradient_norms``): in a deep plain network the gradient that reaches the first layers
  can be orders of magnitude smaller (vanishing) or larger (exploding) than at the last layers (Bengio, Simard &
  Frasconi, "Learning long-term dependencies with gradient descent is difficult", IEEE Trans. Neural Networks 1994;
  Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural networks", AISTATS 2010). He et al.
  argue that with BatchNorm the gradients of their plain nets do *not* vanish, so the degradation they observe is an
  optimisation difficulty of another kind (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR
  2016, section 4.1).
* **Layer responses** (``response_std_over_loader``): He et al. 2016, section 4.2 and Fig. 7, plot the std of each 3x3
  layer's response (after BN, before the ReLU / addition) of trained CIFAR-10 nets; residual functions respond less than
  plain layers, and the deeper the ResNet the smaller its responses, supporting the view that residual branches learn
  small perturbations of the identity.

Everything runs on the model's device with forward hooks (always removed, in a ``finally``) and ``torch.autograd.grad``;
afterwards the model's parameters, their ``.grad``, every module's train/eval flag and the BatchNorm running statistics
are exactly as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .models.resnet import BasicBlock

_WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _device(model: nn.Module, fallback: Tensor) -> torch.device:
    """The device of the model's first parameter or buffer, else that of the input."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return fallback.device


@contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Set train/eval mode, then restore each module's own flag (modes may be mixed)."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def _forward_hooks(hooks: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Register forward hooks for the duration of the block; removed even if it raises."""
    handles = []
    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def _loss(model: nn.Module, x: Tensor, y: Tensor, hooks: Iterable[tuple[nn.Module, Callable]], loss_fn: Callable,
          train_mode: bool) -> tuple[dict[str, Tensor], Tensor]:  # fmt: skip
    """(the parameters by name, the loss) of one forward pass of (x, y) on the model's device with forward
    ``hooks``, through ``functional_call`` so that the model is left untouched: the parameters enter as
    detached leaves that require grad (they share the parameters' storage: no copy, and autograd stops at
    them; tied weights map to one leaf), the buffers as clones (BatchNorm's updates land on them)."""
    leaves: dict[int, Tensor] = {}
    params = {n: leaves.setdefault(id(p), p.detach().requires_grad_(True))
              for n, p in model.named_parameters(remove_duplicate=False)}  # fmt: skip
    buffers, device = {n: b.clone() for n, b in model.named_buffers()}, _device(model, x)
    with _mode(model, train_mode), _forward_hooks(hooks):
        return params, loss_fn(functional_call(model, params | buffers, (x.to(device),)), y.to(device))


def gradient_norms(model: nn.Module, x: Tensor, y: Tensor, *,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                   train_mode: bool = True) -> pd.DataFrame:  # fmt: skip
    """Per-layer gradient L2 norm of the loss on one batch, for every weight layer in forward order.

    Columns: ``layer`` (qualified name), ``index`` (0..L-1, the depth: order of first call in this forward pass),
    ``kind`` ('conv' / 'linear'), ``grad_norm`` (L2 norm of d loss / d weight; biases are left out), ``weight_norm`` and
    ``relative`` (grad_norm / weight_norm, the relative step plain SGD would take). A layer the loss does not depend on
    gets grad_norm 0. ``df.attrs["loss"]`` holds the loss value.

    ``train_mode=True`` (default) measures as during training: BatchNorm normalises with the batch's statistics.
    ``train_mode=False`` uses the running statistics (eval mode). The model is not changed (``_loss``: BatchNorm's
    updates land on clones of the buffers).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHT_TYPES)]
    # Qualified name of each layer's weight, as functional_call knows it.
    weight_names = [f"{n}.weight" if n else "weight" for n, _ in layers]
    first: dict[int, int] = {}  # layer position -> rank of its first call

    def hook(i: int) -> Callable:
        def fn(module, inputs, output):
            first.setdefault(i, len(first))

        return fn

    params, loss = _loss(model, x, y, [(m, hook(i)) for i, (_, m) in enumerate(layers)], loss_fn, train_mode)
    grads = torch.autograd.grad(loss, [params[w] for w in weight_names], allow_unused=True)
    # forward order; layers that never ran keep their registration order, last
    order = sorted(range(len(layers)), key=lambda i: first.get(i, len(layers) + i))
    # One stacked tensor per column, one device sync for all of them.
    with torch.no_grad():
        zero = torch.zeros((), device=loss.device)  # the gradient of a layer the loss does not depend on
        g = torch.stack([zero if grads[i] is None else torch.linalg.vector_norm(grads[i].float()) for i in order])
        w = torch.stack([torch.linalg.vector_norm(params[weight_names[i]].float()) for i in order])
    df = pd.DataFrame({"layer": [layers[i][0] for i in order], "index": range(len(order)),
                       "kind": ["linear" if isinstance(layers[i][1], nn.Linear) else "conv" for i in order],
                       "grad_norm": g.cpu().double().numpy(), "weight_norm": w.cpu().double().numpy()})
    df["relative"] = df["grad_norm"] / df["weight_norm"]
    df.attrs["loss"] = float(loss.detach())
    return df


def block_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The model's blocks in forward order: each composite child of a Sequential stage
    (a residual, SE or dense block, a transition), or the whole stage where it has none
    (a stem, a head, a single layer). Every cnnlib model has ``.stages``."""
    if not hasattr(model, "stages"):
        raise ValueError(f"{type(model).__name__} has no .stages; cannot list its blocks")
    out: dict[str, nn.Module] = {}
    for stage in model.stages:
        module = getattr(model, stage)
        kids = [(n, c) for n, c in module.named_children() if any(True for _ in c.children())]
        if isinstance(module, nn.Sequential) and kids:
            out.update({f"{stage}.{n}": c for n, c in kids})
        else:
            out[stage] = module
    return out


def backward_signal(model: nn.Module, x: Tensor, y: Tensor, *, blocks: dict[str, nn.Module] | None = None,
                    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                    train_mode: bool = True) -> pd.DataFrame:  # fmt: skip
    """The backward signal itself: the L2 norm of dL/dh for each block's output h, on one batch.

    Unlike a weight gradient, which with BatchNorm scales as 1/||W|| of its layer, this is the signal that
    back-propagation carries from the loss towards the input. Columns: ``block``, ``index`` (forward order),
    ``grad_norm`` (over the whole batch; the loss is the batch mean), ``per_image`` (the root-mean-square over the batch
    of each image's own gradient norm, the batch mean undone: comparable across batch sizes), ``out_std`` (std of h).
    ``blocks`` defaults to ``block_modules(model)``. The model is left unchanged (same mechanism as ``gradient_norms``).
    """
    blocks = block_modules(model) if blocks is None else blocks
    outputs: dict[str, Tensor] = {}

    def hook(name):
        def fn(module, inputs, output):
            outputs.setdefault(name, output)  # first call: the block's place in this pass

        return fn

    _, loss = _loss(model, x, y, [(m, hook(n)) for n, m in blocks.items()], loss_fn, train_mode)
    names = [n for n in blocks if n in outputs]
    grads = torch.autograd.grad(loss, [outputs[n] for n in names], allow_unused=True)
    b = len(x)
    with torch.no_grad():
        rows = []
        for i, (n, g) in enumerate(zip(names, grads, strict=True)):
            h = outputs[n].detach().float()
            g = torch.zeros_like(h) if g is None else g.float()
            per_image = g.flatten(1).norm(dim=1) * b  # undo the batch mean: each image's own gradient
            rows.append((n, i, float(g.norm()), float(per_image.square().mean().sqrt()), float(h.std())))
    return pd.DataFrame(rows, columns=["block", "index", "grad_norm", "per_image", "out_std"])


class _Moments:
    """Running float64 count, sum and sum of squares of tensors, on their device."""

    def __init__(self):
        self.n, self.s, self.ss = 0, 0.0, 0.0

    def add(self, t: Tensor) -> None:
        t = t.detach().double()
        self.s, self.ss = self.s + t.sum(), self.ss + t.square().sum()
        self.n += t.numel()

    def std(self) -> float:
        """The unbiased std of all values added, like Tensor.std."""
        mean = self.s / self.n
        return float(((self.ss - self.n * mean.square()).clamp_min(0) / max(self.n - 1, 1)).sqrt())


def response_std_over_loader(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *,
                             max_batches: int | None = None) -> pd.DataFrame:  # fmt: skip
    """He et al. 2016, Fig. 7: std of each block's response over the batches of a loader, in eval mode.

    For every ``BasicBlock``, the std of the residual branch output F(x): the block's ``attn`` output, after the second
    BN (and SE, if any), before the addition and the final ReLU. A plain block has the same ``attn`` position, so plain
    and residual nets are measured alike. (The paper plots every 3x3 layer; this reports the second layer of each block,
    the one that forms F(x).) The std is that of all values of all batches together (pooled float64 sums), not a mean of
    per-batch stds; ``max_batches`` limits the batches read. Columns: block (qualified name), index (registration order
    = depth), std. The model is left unchanged.
    """
    branches = {n: m.attn for n, m in model.named_modules() if isinstance(m, BasicBlock)}
    if not branches:
        raise ValueError(f"{type(model).__name__} has no cnnlib.models.resnet.BasicBlock: layer responses are defined "
                         "for the plain/residual networks built from it (plain20/56, resnet20/56, plainnet18, "
                         "resnet18, se_resnet18)")  # fmt: skip
    stats = {name: _Moments() for name in branches}

    def hook(name: str) -> Callable:
        return lambda module, inputs, output: stats[name].add(output)  # None: the output is left as it is

    with _mode(model, False), torch.no_grad(), _forward_hooks([(m, hook(n)) for n, m in branches.items()]):
        for x, _ in itertools.islice(loader, max_batches):
            model(x.to(_device(model, x)))
    if silent := [name for name, st in stats.items() if st.n == 0]:
        raise ValueError(f"these modules never ran in the forward pass: {silent}")
    return pd.DataFrame([(name, i, st.std()) for i, (name, st) in enumerate(stats.items())],
                        columns=["block", "index", "std"])  # fmt: skip
