"""An independent float64 NumPy forward pass of the VGGFace2 (SE-)ResNet-50 teachers.

Written from protocol §4.1, not from ``tf_cme.models.resnet``: convolution by im2col +
einsum, batch norm from MatConvNet moments (mean, sigma), ceil-mode max pool padded
with -inf, SE blocks, global average pooling, 1x1 classifier. Parameters are in the
MatConvNet naming (``<layer>_filter`` HxWxCinxCout, ``<layer>_bias``, ``<bn>_mult``,
``<bn>_bias``, ``<bn>_moments`` [C, 2]); channel counts come from their shapes.
Also: random parameter sets and their conversion to a pytorch-mcn state dict.
"""
from __future__ import annotations

import numpy as np

STAGES = (3, 4, 6, 3)
EPS = 1e-5


def block_names(se: bool):
    """(prefix, stride, has_projection) for every bottleneck."""
    out = []
    for s, n in enumerate(STAGES):
        for b in range(n):
            out.append((f"conv{s + 2}_{b + 1}", 2 if (b == 0 and s > 0) else 1, b == 0))
    return out


def conv_specs(se: bool, width: float, num_classes: int = 8):
    """[(name, kh, cin, cout, bias, has_bn)] in layer order."""
    ch = lambda c: max(1, int(round(c * width)))
    specs = [("conv1_7x7_s2", 7, 3, ch(64), False, True)]
    cin = ch(64)
    mids = {2: 64, 3: 128, 4: 256, 5: 512}
    for prefix, stride, proj in block_names(se):
        mid, out = ch(mids[int(prefix[4])]), ch(4 * mids[int(prefix[4])])
        specs += [(prefix + "_1x1_reduce", 1, cin, mid, False, True),
                  (prefix + "_3x3", 3, mid, mid, False, True),
                  (prefix + "_1x1_increase", 1, mid, out, False, True)]
        if se:
            r = max(1, out // 16)
            specs += [(prefix + "_1x1_down", 1, out, r, True, False),
                      (prefix + "_1x1_up", 1, r, out, True, False)]
        if proj:
            specs.append((prefix + "_1x1_proj", 1, cin, out, False, True))
        cin = out
    specs.append(("classifier", 1, cin, num_classes, True, False))
    return specs


def random_params(se: bool, width: float, seed: int = 0, num_classes: int = 8) -> dict:
    """MatConvNet-named random weights and random BN statistics (float32, as in a file)."""
    rng = np.random.default_rng(seed)
    p = {}
    for name, k, cin, cout, bias, bn in conv_specs(se, width, num_classes):
        p[name + "_filter"] = rng.normal(0, np.sqrt(2.0 / (k * k * cin)),
                                         (k, k, cin, cout)).astype(np.float32)
        if bias:
            p[name + "_bias"] = rng.normal(0, 0.1, (cout,)).astype(np.float32)
        if bn:
            p[name + "_bn_mult"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
            p[name + "_bn_bias"] = rng.normal(0, 0.2, cout).astype(np.float32)
            p[name + "_bn_moments"] = np.stack(
                [rng.normal(0, 0.3, cout), rng.uniform(0.5, 2.0, cout)], 1).astype(np.float32)
    return p


def to_pytorch(params: dict) -> dict:
    """The same weights as a pytorch-mcn state dict (numpy arrays; OIHW filters)."""
    sd = {}
    for k, v in params.items():
        if k.endswith("_filter"):
            sd[k[:-7] + ".weight"] = np.ascontiguousarray(v.transpose(3, 2, 0, 1))
        elif k.endswith("_bn_mult"):
            sd[k[:-5] + ".weight"] = v
        elif k.endswith("_bn_moments"):
            n = k[:-8]
            sd[n + ".running_mean"] = np.ascontiguousarray(v[:, 0])
            sd[n + ".running_var"] = (v[:, 1].astype(np.float64) ** 2 - EPS).astype(np.float32)
        elif k.endswith("_bias"):
            sd[k[:-5] + ".bias"] = v
    return sd


# ----------------------------------------------------------------------------- forward

def conv(x, w, b=None, stride=1, pad=0):
    """x [N,H,W,C], w [kh,kw,C,O]; zero padding; im2col via sliding windows + einsum."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    win = win[:, ::stride, ::stride]                    # [N, Ho, Wo, C, kh, kw]
    y = np.einsum("nhwcij,ijco->nhwo", win, w, optimize=True)
    return y + b if b is not None else y


def bn(x, p, name):
    m = p[name + "_moments"]
    return p[name + "_mult"] * (x - m[:, 0]) / m[:, 1] + p[name + "_bias"]


def maxpool_ceil(x, k=3, s=2):
    h, w = x.shape[1:3]
    ho, wo = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    ph, pw = (ho - 1) * s + k - h, (wo - 1) * s + k - w
    x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(-1, -2))


relu = lambda x: np.maximum(x, 0)
sigmoid = lambda x: 0.5 * (1 + np.tanh(0.5 * x))


def preprocess(images_uint8, mean=(131.0912, 103.8827, 91.4953),
               rgb2gray=(0.2989, 0.5870, 0.1140)):
    """uint8 [N,S,S,1|3] already at the network's input size: grey, x3, minus mean."""
    x = images_uint8.astype(np.float64)
    if x.shape[-1] == 3:
        x = np.round(x @ np.asarray(rgb2gray, np.float64))[..., None]
    return np.repeat(x, 3, axis=-1) - np.asarray(mean)


def forward(params: dict, images_uint8, se: bool, return_pool5: bool = False,
            rgb2gray=(0.2989, 0.5870, 0.1140)):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = preprocess(images_uint8, rgb2gray=rgb2gray)
    x = relu(bn(conv(x, p["conv1_7x7_s2_filter"], stride=2, pad=3), p, "conv1_7x7_s2_bn"))
    x = maxpool_ceil(x)
    for prefix, stride, proj in block_names(se):
        y = relu(bn(conv(x, p[prefix + "_1x1_reduce_filter"], stride=stride), p,
                    prefix + "_1x1_reduce_bn"))
        y = relu(bn(conv(y, p[prefix + "_3x3_filter"], pad=1), p, prefix + "_3x3_bn"))
        y = bn(conv(y, p[prefix + "_1x1_increase_filter"]), p, prefix + "_1x1_increase_bn")
        if se:
            s = y.mean(axis=(1, 2), keepdims=True)
            s = relu(conv(s, p[prefix + "_1x1_down_filter"], p[prefix + "_1x1_down_bias"]))
            s = sigmoid(conv(s, p[prefix + "_1x1_up_filter"], p[prefix + "_1x1_up_bias"]))
            y = y * s
        sc = x
        if proj:
            sc = bn(conv(x, p[prefix + "_1x1_proj_filter"], stride=stride), p,
                    prefix + "_1x1_proj_bn")
        x = relu(y + sc)
    pool5 = x.mean(axis=(1, 2), keepdims=True)
    logits = conv(pool5, p["classifier_filter"], p["classifier_bias"]).reshape(len(x), -1)
    return (logits, pool5.reshape(len(x), -1)) if return_pool5 else logits
