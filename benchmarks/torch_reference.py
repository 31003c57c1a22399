"""The network of ``unet_transformer.build_model`` written in PyTorch (NCHW, float32), for speed comparisons.

Exists only for ``python -m benchmarks vs-torch`` (CPU, float32) and
``gpu-check`` (on a GPU: AMP), which train this module and the Keras model on
the same random data and compare images/s; nothing else may import it. Only
torch and the standard library are imported, never Keras or TensorFlow.

Variants "unet" and "u_transformer" mirror the Keras graph layer for layer:
the same widths ``base_filters * [1, 2, 4, 8, 16]``, bias-free 3x3 convs +
BN + ReLU, 2x2 transposed-conv upsampling, MHSA after the bottleneck (no
residual), MHCA on the ``mhca_levels`` deepest skips, and the same trainable
parameters (Keras' ``trainable_weights``). BN uses Keras' epsilon 1e-3 and
our Keras momentum 0.9, which is PyTorch's 0.1.

Differences that leave the arithmetic and the parameters unchanged:

- ``forward`` returns logits; ``ce_dice_loss`` applies the softmax, and its
  cross-entropy comes from the logits (Keras' does too, in graph mode, when
  the probabilities come straight from a softmax).
- Attention is plain (never Keras' query-blocked recomputation); with
  ``fused_attention`` it runs in ``F.scaled_dot_product_attention``, the
  same eq. 1 in one kernel, as a PyTorch user would write it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("unet", "u_transformer")
DEPTH = 4  # max-poolings, as in unet_transformer.model
BN_EPSILON = 1e-3  # Keras' default
BN_MOMENTUM = 0.1  # Keras momentum 0.9: PyTorch weights the new batch, Keras the old average


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU (bias-free convs: BN's beta is the bias)."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, filters, 3, padding=1, bias=False)
        self.bn1 = _bn(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, padding=1, bias=False)
        self.bn2 = _bn(filters)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


def sinusoidal_encoding_2d(height: int, width: int, channels: int) -> torch.Tensor:
    """The fixed 2D encoding of ``unet_transformer.layers``, (channels, height, width) float32.

    Channels [0, C/2) encode the column x, [C/2, C) the row y, each as
    interleaved sin(p * omega_i), cos(p * omega_i), omega_i = exp(-ln(10000) * 2i / (C/2)).
    """
    half = channels // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(0, half, 2, dtype=torch.float64) / half).float()

    def encode(length):  # (C/2, length)
        angle = torch.arange(length, dtype=torch.float32)[:, None] * omega
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(length, half).T

    pe_x = encode(width)[:, None, :].expand(half, height, width)
    pe_y = encode(height)[:, :, None].expand(half, height, width)
    return torch.cat([pe_x, pe_y], dim=0)


class PositionalEncoding2D(nn.Module):
    """Adds the fixed encoding; a non-trainable buffer, recomputed only when the grid size changes."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("encoding", torch.zeros(channels, 0, 0), persistent=False)

    def forward(self, x):
        if self.encoding.shape[1:] != x.shape[2:]:
            self.encoding = sinusoidal_encoding_2d(x.shape[2], x.shape[3], self.channels).to(x.device)
        return x + self.encoding


class AttentionCore(nn.Module):
    """W_q, W_k, W_v and W^O (Keras' Dense with bias, i.e. Linear on the tokens) and eq. 1 per head."""

    def __init__(self, channels: int, heads: int, fused_attention: bool):
        super().__init__()
        self.heads, self.fused_attention = heads, fused_attention
        self.query, self.key, self.value, self.output_projection = (nn.Linear(channels, channels) for _ in range(4))

    def attend(self, qk_map, v_map):
        """Q, K from ``qk_map``, V from ``v_map`` (same grid, (B, C, H, W)); returns (B, C, H, W)."""
        batch, channels, height, width = qk_map.shape
        qk, v = (t.flatten(2).transpose(1, 2) for t in (qk_map, v_map))  # (B, N, C) tokens
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, h, N, C / h)
                   for t in (self.query(qk), self.key(qk), self.value(v)))
        if self.fused_attention:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # softmax(Q K^T / sqrt(d_k)) V, eq. 1
            out = torch.softmax(q / math.sqrt(q.shape[-1]) @ k.transpose(-2, -1), dim=-1) @ v
        out = self.output_projection(out.transpose(1, 2).flatten(2))
        return out.transpose(1, 2).reshape(batch, channels, height, width)


class MultiHeadSelfAttention2D(AttentionCore):
    """MHSA (section 2.1): X + PE embedded by W_q, W_k, W_v, heads merged by W^O; no residual."""

    def __init__(self, channels: int, heads: int, positional_encoding: bool, fused_attention: bool):
        super().__init__(channels, heads, fused_attention)
        self.encoding = PositionalEncoding2D(channels) if positional_encoding else nn.Identity()

    def forward(self, x):
        x = self.encoding(x)
        return self.attend(x, x)


class MultiHeadCrossAttention(AttentionCore):
    """MHCA (section 2.2): gates the skip S by Z, attention of Y (Q, K) over max-pooled S (V); returns Z * S."""

    def __init__(self, s_channels: int, y_channels: int, heads: int, positional_encoding: bool,
                 fused_attention: bool):
        super().__init__(s_channels, heads, fused_attention)
        self.y_conv, self.y_bn = nn.Conv2d(y_channels, s_channels, 1, bias=False), _bn(s_channels)
        self.s_conv, self.s_bn = nn.Conv2d(s_channels, s_channels, 1, bias=False), _bn(s_channels)
        self.z_conv, self.z_bn = nn.Conv2d(s_channels, s_channels, 1, bias=False), _bn(s_channels)
        self.encoding = PositionalEncoding2D(s_channels) if positional_encoding else nn.Identity()

    def forward(self, s, y):
        y_tokens = F.relu(self.y_bn(self.y_conv(y)))
        s_tokens = F.relu(self.s_bn(self.s_conv(F.max_pool2d(s, 2))))
        out = self.attend(self.encoding(y_tokens), self.encoding(s_tokens))
        z = torch.sigmoid(self.z_bn(self.z_conv(out)))
        # Half-pixel centres with clamped edges, as Keras' upsample_bilinear.
        return F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False) * s


class UTransformer(nn.Module):
    """The U-Net backbone, with MHSA and MHCA for "u_transformer"; ``forward`` maps images to logits."""

    def __init__(self, variant: str, base_filters: int, num_classes: int, in_channels: int, heads: int,
                 positional_encoding: bool, mhca_levels: int, fused_attention: bool):
        super().__init__()
        widths = [base_filters * 2**i for i in range(DEPTH + 1)]
        self.enc = nn.ModuleList(ConvBlock(c_in, c) for c_in, c in zip([in_channels, *widths[:-2]], widths[:-1]))
        self.bottleneck = ConvBlock(widths[-2], widths[-1])
        transformer = variant == "u_transformer"
        self.mhsa = (MultiHeadSelfAttention2D(widths[-1], heads, positional_encoding, fused_attention)
                     if transformer else None)
        self.mhca = nn.ModuleDict({
            str(level): MultiHeadCrossAttention(widths[level], widths[level + 1], heads, positional_encoding,
                                                fused_attention)
            for level in (range(DEPTH - mhca_levels, DEPTH) if transformer else ())
        })
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(DEPTH))
        self.dec = nn.ModuleList(ConvBlock(2 * widths[i], widths[i]) for i in range(DEPTH))
        self.logits = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        if self.mhsa is not None:
            x = self.mhsa(x)
        for level in reversed(range(DEPTH)):
            skip = skips[level]
            if str(level) in self.mhca:  # MHCA sees Y before its upsampling
                skip = self.mhca[str(level)](skip, x)
            x = self.dec[level](torch.cat([skip, self.up[level](x)], dim=1))
        return self.logits(x)


def build(variant: str, base_filters: int, num_classes: int = 8, in_channels: int = 1, heads: int = 8,
          positional_encoding: bool = True, mhca_levels: int = 3, fused_attention: bool = True) -> nn.Module:
    """The PyTorch twin of ``unet_transformer.build_model(variant, ...)``; outputs (B, num_classes, H, W) logits.

    Example:
    >>> build("unet", 4, num_classes=3)(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not 0 <= mhca_levels <= DEPTH:
        raise ValueError(f"mhca_levels must be in 0..{DEPTH}, got {mhca_levels}")
    return UTransformer(variant, base_filters, num_classes, in_channels, heads, positional_encoding, mhca_levels,
                        fused_attention)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters; equals Keras' sum over ``trainable_weights`` (BN moving statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def ce_dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, smooth: float = 1e-5):
    """``common.nn.losses.CEDiceLoss``: mean cross-entropy + 1 - mean soft Dice over the foreground classes.

    Dice pools each class's overlap over batch and space; background (class 0)
    is left out. ``logits`` (B, C, H, W), ``labels`` (B, H, W) integers.
    """
    labels = labels.long()
    cross_entropy = F.cross_entropy(logits, labels)  # log-softmax: no clipping of the probabilities needed
    probabilities = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(probabilities.dtype)
    intersection = (one_hot * probabilities).sum(dim=(0, 2, 3))
    denominator = one_hot.sum(dim=(0, 2, 3)) + probabilities.sum(dim=(0, 2, 3))
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return cross_entropy + 1.0 - dice[1:].mean()


def make_optimizer(module: nn.Module) -> torch.optim.Optimizer:
    """Adam at the zoo's rate 1e-4 with Keras' epsilon 1e-7.

    The zoo's per-epoch exponential decay is left out: it changes the rate,
    not the cost of a step, and a speed benchmark runs within one epoch.
    (Keras adds epsilon to sqrt(v) before the bias correction, PyTorch after:
    a different number, the same work.)
    """
    return torch.optim.Adam(module.parameters(), lr=1e-4, eps=1e-7)


def train_step(module: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
               num_classes: int, scaler: torch.amp.GradScaler | None = None) -> float:
    """One eager training step on (B, C_in, H, W) images and (B, H, W) labels; returns the loss.

    With a ``scaler`` it is PyTorch's AMP, the counterpart of Keras'
    mixed_float16: the network under float16 autocast, the loss from float32
    logits (Keras' softmax runs in float32), scaled for the backward pass, the
    step skipped where a gradient overflows (Keras' ``LossScaleOptimizer``).
    """
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.float16, enabled=scaler is not None):
        logits = module(images)
    loss = ce_dice_loss(logits.float(), labels, num_classes)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item()
