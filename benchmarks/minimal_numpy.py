"""The minimal hand-written NumPy loops gdtrain is measured against.

Each does exactly the math of the matching gdtrain config, written the careful way
(float32 throughout, every array preallocated, `out=` everywhere, batches gathered
with np.take(mode='clip')) and with nothing else: no tables, no EMA of the tool's
structure, no logging. They are the yardstick for the tool's overhead, so they stay
plain on purpose: one NumPy call per operation per parameter.
"""

from __future__ import annotations

import math

import numpy as np


def _check_batch(n, batch):
    # the loops keep batches inside one epoch, as MNIST's 60,000 rows allow for 100 and 200
    if n % batch:
        raise ValueError(f"batch size {batch} must divide the {n} training rows")


def _gather(x, y, perm, start, xb, yb, idx):
    """Rows perm[start:start+B] into the preallocated xb, yb."""
    idx[:] = perm[start : start + len(idx)]
    np.take(x, idx, axis=0, out=xb, mode="clip")
    np.take(y, idx, axis=0, out=yb, mode="clip")


def _softmax_xent_grad(logits, yb, rowmax, rowsum, rows, mean):
    """logits -> d loss/d logits in place; returns the summed (or mean) cross-entropy."""
    np.max(logits, axis=1, out=rowmax)
    logits -= rowmax[:, None]
    picked = logits[rows, yb]  # shifted logit of the true class
    np.exp(logits, out=logits)
    np.sum(logits, axis=1, out=rowsum)
    loss = float(np.log(rowsum).sum(dtype=np.float64) - picked.sum(dtype=np.float64))
    logits /= rowsum[:, None]
    logits[rows, yb] -= 1
    if mean:
        logits /= logits.dtype.type(len(rows))
        loss /= len(rows)
    return loss


def mlp_momentum_ema(x, y, params, order, steps, *, batch=200, lr0=0.1, decay_rate=0.99,
                     momentum=0.9, l2=1e-4, ema_decay=0.99):
    """784-500-10 ReLU MLP, mean sparse cross-entropy, L2 on W1/W2, momentum with
    lr0·rate^floor(epoch) and an EMA with num_updates; `order(epoch)` gives the row order.

    Returns (params, shadows, last loss). `params` is updated in place.
    """
    dt = x.dtype.type
    n = x.shape[0]
    _check_batch(n, batch)
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    d_in, hidden = W1.shape
    k = W2.shape[1]
    names = ("W1", "b1", "W2", "b2")
    grads = {name: np.empty_like(params[name]) for name in names}
    accum = {name: np.zeros_like(params[name]) for name in names}
    shadow = {name: params[name].copy() for name in names}
    tmp = {name: np.empty_like(params[name]) for name in names}
    xb = np.empty((batch, d_in), x.dtype)
    yb = np.empty(batch, y.dtype)
    idx = np.empty(batch, np.intp)
    h = np.empty((batch, hidden), x.dtype)
    dh = np.empty_like(h)
    mask = np.empty(h.shape, bool)
    logits = np.empty((batch, k), x.dtype)
    rowmax, rowsum = np.empty(batch, x.dtype), np.empty(batch, x.dtype)
    rows = np.arange(batch)
    steps_per_epoch = n / batch
    loss = math.nan
    for step in range(steps):
        epoch, start = divmod(step * batch, n)
        _gather(x, y, order(epoch), start, xb, yb, idx)
        np.matmul(xb, W1, out=h)
        h += b1
        np.maximum(h, 0, out=h)
        np.matmul(h, W2, out=logits)
        logits += b2
        loss = _softmax_xent_grad(logits, yb, rowmax, rowsum, rows, mean=True)
        np.matmul(h.T, logits, out=grads["W2"])
        np.sum(logits, axis=0, out=grads["b2"])
        np.matmul(logits, W2.T, out=dh)
        np.greater(h, 0, out=mask)
        np.multiply(dh, mask, out=dh)
        np.matmul(xb.T, dh, out=grads["W1"])
        np.sum(dh, axis=0, out=grads["b1"])
        lr = dt(lr0 * decay_rate ** math.floor(step / steps_per_epoch))
        one_minus_d = dt(1) - dt(min(ema_decay, (1.0 + step + 1) / (10.0 + step + 1)))
        for name in names:
            p, g, a, s, t = params[name], grads[name], accum[name], shadow[name], tmp[name]
            if name in ("W1", "W2"):
                np.multiply(p, dt(l2), out=t)
                g += t
            a *= dt(momentum)
            a += g
            np.multiply(a, lr, out=t)
            p -= t
            np.subtract(s, p, out=t)
            t *= one_minus_d
            s -= t
    return params, shadow, loss


def softmax_sgd(x, y, params, order, steps, *, batch=100, lr=0.01):
    """Softmax regression, summed cross-entropy, plain gradient descent (TF1's tutorial)."""
    dt = x.dtype.type
    n = x.shape[0]
    _check_batch(n, batch)
    W, b = params["W"], params["b"]
    d_in, k = W.shape
    gW, gb = np.empty_like(W), np.empty_like(b)
    xb = np.empty((batch, d_in), x.dtype)
    yb = np.empty(batch, y.dtype)
    idx = np.empty(batch, np.intp)
    logits = np.empty((batch, k), x.dtype)
    rowmax, rowsum = np.empty(batch, x.dtype), np.empty(batch, x.dtype)
    rows = np.arange(batch)
    minus_lr = -dt(lr)
    loss = math.nan
    for step in range(steps):
        epoch, start = divmod(step * batch, n)
        _gather(x, y, order(epoch), start, xb, yb, idx)
        np.matmul(xb, W, out=logits)
        logits += b
        loss = _softmax_xent_grad(logits, yb, rowmax, rowsum, rows, mean=False)
        np.matmul(xb.T, logits, out=gW)
        np.sum(logits, axis=0, out=gb)
        gW *= minus_lr
        W += gW
        gb *= minus_lr
        b += gb
    return params, loss
