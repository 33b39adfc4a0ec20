"""PyTorch CPU eager-mode equivalents of the minimal loops, written the idiomatic way.

Same math as the gdtrain configs: torch.optim.SGD's momentum (buf = m·buf + g;
p -= lr·buf) is TF1's MomentumOptimizer, its weight_decay adds scale·p to the gradient
as TF1's L2 regularizer does, and the EMA is a lerp of the shadows toward the
parameters with TF1's num_updates decay. Imported only when torch is installed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(a: np.ndarray, grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, requires_grad=grad)


def mlp_momentum_ema(x, y, params, order, steps, *, batch=200, lr0=0.1, decay_rate=0.99,
                     momentum=0.9, l2=1e-4, ema_decay=0.99):
    n = x.shape[0]
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    W1, b1, W2, b2 = (_tensor(params[k]) for k in ("W1", "b1", "W2", "b2"))
    variables = [W1, b1, W2, b2]
    opt = torch.optim.SGD(
        [{"params": [W1, W2], "weight_decay": l2}, {"params": [b1, b2], "weight_decay": 0.0}],
        lr=lr0, momentum=momentum,
    )
    shadows = [v.detach().clone() for v in variables]
    steps_per_epoch = n / batch
    loss = math.nan
    for step in range(steps):
        epoch, start = divmod(step * batch, n)
        idx = torch.from_numpy(order(epoch)[start : start + batch])
        xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
        h = torch.relu(torch.addmm(b1, xb, W1))
        logits = torch.addmm(b2, h, W2)
        out = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        out.backward()
        lr = lr0 * decay_rate ** math.floor(step / steps_per_epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        d = min(ema_decay, (1.0 + step + 1) / (10.0 + step + 1))
        with torch.no_grad():
            torch._foreach_lerp_(shadows, [v.detach() for v in variables], 1.0 - d)
        loss = out.item()
    names = ("W1", "b1", "W2", "b2")
    result = {k: v.detach().numpy() for k, v in zip(names, variables, strict=True)}
    shadow = {k: s.numpy() for k, s in zip(names, shadows, strict=True)}
    return result, shadow, loss


def softmax_sgd(x, y, params, order, steps, *, batch=100, lr=0.01):
    n = x.shape[0]
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    W, b = _tensor(params["W"]), _tensor(params["b"])
    opt = torch.optim.SGD([W, b], lr=lr)
    loss = math.nan
    for step in range(steps):
        epoch, start = divmod(step * batch, n)
        idx = torch.from_numpy(order(epoch)[start : start + batch])
        xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
        out = F.cross_entropy(torch.addmm(b, xb, W), yb, reduction="sum")
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        loss = out.item()
    return {"W": W.detach().numpy(), "b": b.detach().numpy()}, loss
