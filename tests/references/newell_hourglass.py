"""Independent float64 NumPy reference of Newell et al.'s stacked hourglass network.

Transcribes the computation of princeton-vl/pytorch_stacked_hourglass (commit
9844d5c89da4330cde805a8e0aed5180b3954e78), files ``models/layers.py`` (Conv,
Residual, Hourglass) and ``models/posenet.py`` (Merge, PoseNet), in inference
mode (BatchNorm uses running statistics, eps 1e-5).  Parameters are read from a
PyTorch-style state dict (conv weights (out, in, kh, kw)); keys may carry the
``model.module.`` prefix that the original ``train.py`` checkpoints have.

It deliberately shares no code with the zoo (``acnn_pose``): it is the yardstick
the zoo's Keras model is tested against.  Tensors are kept NHWC here for speed;
the arithmetic is the same as the original's NCHW.  NumPy only.
"""
import numpy as np

BN_EPS = 1e-5
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn_spec(p, c):  # (key, kind, shape, fan_in)
    yield from ((p + name, name, () if name == "num_batches_tracked" else (c,), None) for name in _BN_KEYS)


def _conv_spec(p, i, o, k, bn=False):  # Conv: conv.weight, conv.bias, then bn.*
    yield p + "conv.weight", "w", (o, i, k, k), i * k * k
    yield p + "conv.bias", "w", (o,), i * k * k
    yield from (_bn_spec(p + "bn.", o) if bn else ())


def _residual_spec(p, i, o):  # registration: relu, bn1, conv1, bn2, conv2, bn3, conv3, skip_layer
    h = o // 2
    yield from _bn_spec(p + "bn1.", i)
    yield from _conv_spec(p + "conv1.", i, h, 1)
    yield from _bn_spec(p + "bn2.", h)
    yield from _conv_spec(p + "conv2.", h, h, 3)
    yield from _bn_spec(p + "bn3.", h)
    yield from _conv_spec(p + "conv3.", h, o, 1)
    yield from _conv_spec(p + "skip_layer.", i, o, 1)


def _hourglass_spec(p, n, f):  # up1, pool1, low1, low2, low3, up2
    yield from _residual_spec(p + "up1.", f, f)
    yield from _residual_spec(p + "low1.", f, f)
    yield from (_hourglass_spec(p + "low2.", n - 1, f) if n > 1 else _residual_spec(p + "low2.", f, f))
    yield from _residual_spec(p + "low3.", f, f)


def _posenet_spec(nstack, inp_dim, oup_dim):  # pre, hgs, features, outs, merge_features, merge_preds
    yield from _conv_spec("pre.0.", 3, 64, 7, bn=True)
    yield from _residual_spec("pre.1.", 64, 128)
    yield from _residual_spec("pre.3.", 128, 128)
    yield from _residual_spec("pre.4.", 128, inp_dim)
    for i in range(nstack):
        yield from _hourglass_spec(f"hgs.{i}.0.", 4, inp_dim)
    for i in range(nstack):
        yield from _residual_spec(f"features.{i}.0.", inp_dim, inp_dim)
        yield from _conv_spec(f"features.{i}.1.", inp_dim, inp_dim, 1, bn=True)
    for i in range(nstack):
        yield from _conv_spec(f"outs.{i}.", inp_dim, oup_dim, 1)
    for i in range(nstack - 1):
        yield from _conv_spec(f"merge_features.{i}.conv.", inp_dim, inp_dim, 1)
    for i in range(nstack - 1):
        yield from _conv_spec(f"merge_preds.{i}.conv.", oup_dim, inp_dim, 1)


_RANGES = {"weight": (0.5, 1.5), "bias": (-0.2, 0.2), "running_mean": (-0.5, 0.5), "running_var": (0.5, 2.0)}


def random_state_dict(nstack, inp_dim=256, oup_dim=16, seed=0, prefix="model.module."):
    """Every key of PoseNet(nstack, inp_dim, oup_dim).state_dict(), in PyTorch's order."""
    rng, state = np.random.default_rng(seed), {}
    for key, kind, shape, fan_in in _posenet_spec(nstack, inp_dim, oup_dim):
        if kind == "num_batches_tracked":
            state[prefix + key] = np.array(0, dtype=np.int64)
            continue
        # conv weight and bias: PyTorch's default U(+-1/sqrt(fan_in)); BatchNorm: _RANGES
        lo, hi = (-1.0 / np.sqrt(fan_in), 1.0 / np.sqrt(fan_in)) if kind == "w" else _RANGES[kind]
        state[prefix + key] = rng.uniform(lo, hi, size=shape).astype(np.float32)
    return state


def _strip(state):
    """Float64 copy with train.py's ``model.module.`` prefix removed."""
    return {k.removeprefix("model.").removeprefix("module."): np.asarray(v, dtype=np.float64) for k, v in state.items()}


def batchnorm(s, p, x):
    scale = s[p + "weight"] / np.sqrt(s[p + "running_var"] + BN_EPS)
    return (x - s[p + "running_mean"]) * scale + s[p + "bias"]


def conv2d(x, w, b, stride=1):
    """nn.Conv2d with padding (k-1)//2 on every side; x NHWC, w (out, in, k, k)."""
    k = w.shape[2]
    pad = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] + 2 * pad - k) // stride + 1
    wo = (x.shape[2] + 2 * pad - k) // stride + 1
    out = np.broadcast_to(b, x.shape[:1] + (ho, wo, w.shape[0])).copy()
    for dy in range(k):
        for dx in range(k):
            view = xp[:, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride, :]
            out += view @ w[:, :, dy, dx].T
    return out


def Conv(s, p, x, stride=1, bn=False, relu=True):
    x = conv2d(x, s[p + "conv.weight"], s[p + "conv.bias"], stride)
    if bn:
        x = batchnorm(s, p + "bn.", x)
    return np.maximum(x, 0.0) if relu else x


def Residual(s, p, x):
    need_skip = s[p + "bn1.weight"].shape[0] != s[p + "conv3.conv.weight"].shape[0]
    residual = Conv(s, p + "skip_layer.", x, relu=False) if need_skip else x
    out = Conv(s, p + "conv1.", np.maximum(batchnorm(s, p + "bn1.", x), 0.0), relu=False)
    out = Conv(s, p + "conv2.", np.maximum(batchnorm(s, p + "bn2.", out), 0.0), relu=False)
    out = Conv(s, p + "conv3.", np.maximum(batchnorm(s, p + "bn3.", out), 0.0), relu=False)
    return out + residual


def Pool(x):  # nn.MaxPool2d(2, 2)
    b, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def Hourglass(s, p, n, x):
    up1 = Residual(s, p + "up1.", x)
    low1 = Residual(s, p + "low1.", Pool(x))
    low2 = Hourglass(s, p + "low2.", n - 1, low1) if n > 1 else Residual(s, p + "low2.", low1)
    low3 = Residual(s, p + "low3.", low2)
    return up1 + low3.repeat(2, axis=1).repeat(2, axis=2)  # nn.Upsample(scale_factor=2, 'nearest')


def stem(state, images):
    """Output of ``pre.0`` alone: Conv(3, 64, 7, 2, bn=True, relu=True); NHWC float64."""
    return Conv(_strip(state), "pre.0.", np.asarray(images, dtype=np.float64), stride=2, bn=True)


def forward(state, images, nstack=None):
    """PoseNet.forward on NHWC images: one NHWC (B, H/4, W/4, oup_dim) float64 heatmap per stack.

    (The original stacks them as torch.stack(preds, 1), i.e. (B, nstack, oup_dim, H/4, W/4).)"""
    s = _strip(state)
    if nstack is None:
        nstack = sum(1 for key in s if key.startswith("outs.") and key.endswith(".conv.weight"))
    x = Conv(s, "pre.0.", np.asarray(images, dtype=np.float64), stride=2, bn=True)
    x = Residual(s, "pre.1.", x)
    x = Residual(s, "pre.4.", Residual(s, "pre.3.", Pool(x)))
    preds_all = []
    for i in range(nstack):
        hg = Hourglass(s, f"hgs.{i}.0.", 4, x)
        feature = Conv(s, f"features.{i}.1.", Residual(s, f"features.{i}.0.", hg), bn=True)
        preds = Conv(s, f"outs.{i}.", feature, relu=False)
        preds_all.append(preds)
        if i < nstack - 1:
            x = (x + Conv(s, f"merge_preds.{i}.conv.", preds, relu=False)
                 + Conv(s, f"merge_features.{i}.conv.", feature, relu=False))
    return preds_all
