"""Student benchmarks (group ``student``).

- ``student-frontend`` (clips/s): the Keras :class:`~tf_cme.audio.frontend.Spectrogram`
  (graph mode, ``tf.function``) on a batch of 4.024 s clips, against the same protocol §3.1
  steps in NumPy/SciPy (``scipy.signal.lfilter`` for the DC filter and pre-emphasis,
  strided frames, ``numpy.fft.rfft``, vectorised over the batch).
- ``student-train-step`` (clips/s): one distillation step of the student (front end,
  VGGVox network, hot-cross-ent, SGD momentum + weight decay) with
  :class:`~tf_cme.training.distiller.Distiller`, against the same network, loss and
  optimiser written in PyTorch (front end included, computed the same way), both on
  every core of this CPU.
"""
from __future__ import annotations

import numpy as np

from ..audio.constants import TRAIN_CROP_SAMPLES
from .harness import Pair, cpu_count, stage


def _clips(n, length, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    f0 = rng.uniform(100, 250, (n, 1))
    x = 0.3 * np.sin(2 * np.pi * f0 * t) * np.abs(np.sin(2 * np.pi * 2 * t))
    x += 0.02 * rng.standard_normal((n, length))
    return x.astype(np.float32)


def numpy_spectrogram(x: np.ndarray) -> np.ndarray:
    """protocol §3.1 steps 1-7 with NumPy/SciPy, batched: ``[B, L]`` -> ``[B, 512, M, 1]``."""
    from scipy.signal import lfilter
    x = np.asarray(x, np.float32)
    peak = np.max(np.abs(x), axis=1, keepdims=True)
    x = np.where(peak <= 1, x * 32768.0, x)
    y = lfilter([1.0, -1.0], [1.0, -0.99], x, axis=1)
    z = lfilter([1.0, -0.97], [1.0], y, axis=1).astype(np.float32)
    m = (z.shape[1] - 400) // 160 + 1
    frames = np.lib.stride_tricks.sliding_window_view(z, 400, axis=1)[:, ::160][:, :m]
    mag = np.abs(np.fft.rfft(frames * np.hamming(400).astype(np.float32), n=512, axis=-1))
    mag = np.concatenate([mag, mag[..., 255:0:-1]], axis=-1).astype(np.float32)
    mu = mag.mean(axis=1, keepdims=True)
    sd = mag.std(axis=1, ddof=1, keepdims=True)
    out = np.where(sd > 0, (mag - mu) / np.where(sd > 0, sd, 1), 0)
    return np.transpose(out, (0, 2, 1))[..., None]


@stage("student-frontend", group="student", unit="clips/s")
def frontend_stage(ctx) -> Pair:
    import tensorflow as tf
    from ..audio.frontend import Spectrogram
    n = 8 if ctx.quick else 32
    x = _clips(n, TRAIN_CROP_SAMPLES)
    layer = Spectrogram(dither=False)
    fn = tf.function(lambda w: layer(w), input_signature=[tf.TensorSpec([None, None])])
    xt = tf.constant(x)

    def ours():
        fn(xt).numpy()
        return n

    def peer():
        numpy_spectrogram(x)
        return n
    return Pair(ours, peer, "numpy+scipy (lfilter, rfft)", ours_cores=cpu_count(),
                peer_cores=1, note=f"{n} clips of 4.024 s per call")


# ------------------------------------------------------------------ PyTorch peer
def torch_student(width: float):
    import torch
    from torch import nn
    from ..models.student import CONVS, POOLS, channels

    class Front(nn.Module):
        """The same front end as the Keras layer (exact split block products, block
        states by doubling, DC filter and pre-emphasis at once, frames, |FFT|)."""

        def __init__(self):
            super().__init__()
            from ..audio import frontend as fe
            iir = fe._iir_matrices()
            self.register_buffer("w_hi", torch.from_numpy(iir["z"][0]))
            self.register_buffer("w_rest", torch.from_numpy(iir["z"][1]))
            self.register_buffer("carry", torch.from_numpy(iir["carry_z"]))
            self.gains = [float(g) for g in iir["state_gains"]]
            self.register_buffer("win", torch.from_numpy(np.hamming(400).astype(np.float32)))
            self.block, self.bits = fe.BLOCK, fe._HI_BITS

        def split_dot(self, u):
            m = u.abs().amax(dim=-1, keepdim=True)
            m = torch.where(m > 0, m, torch.ones_like(m))
            g = torch.pow(2.0, torch.ceil(torch.log2(m)).clamp(-100, 100) - self.bits)
            g = torch.where(g * 2.0 ** self.bits < m, 2 * g, g)
            hi = torch.round(u / g) * g
            return hi @ self.w_hi + torch.cat([hi, u - hi], dim=-1) @ self.w_rest

        def forward(self, x):
            peak = x.abs().amax(dim=1, keepdim=True)
            x = torch.where(peak <= 1, x * 32768.0, x)
            d = x - nn.functional.pad(x, (1, 0))[:, :-1]
            L, P = x.shape[1], self.block
            nb = -(-L // P)
            d = nn.functional.pad(d, (0, nb * P - L)).view(-1, nb, P)
            out = self.split_dot(d)
            local, states = out[..., :P], out[..., P]
            for j, gain in enumerate(self.gains):
                states = states + gain * nn.functional.pad(states, (2 ** j, 0))[:, :-2 ** j]
            prev = nn.functional.pad(states, (1, 0))[:, :-1]
            z = (local + prev.unsqueeze(-1) * self.carry).reshape(-1, nb * P)[:, :L]
            frames = z.unfold(1, 400, 160) * self.win
            mag = torch.fft.rfft(frames, n=512).abs()              # N, M, 257
            mu = mag.mean(1, keepdim=True)
            sd = mag.std(1, keepdim=True)
            out = torch.where(sd > 0, (mag - mu) / torch.where(sd > 0, sd, 1), 0)
            out = out.transpose(1, 2)
            out = torch.cat([out, torch.flip(out[:, 1:256], dims=[1])], dim=1)
            return out.unsqueeze(1)                                # N, 1, 512, M

    class Student(nn.Module):
        def __init__(self):
            super().__init__()
            self.front = Front()
            layers, cin = [], 1
            for name, cout, k, s, pad in CONVS:
                c = channels(cout, width)
                layers += [nn.Conv2d(cin, c, k, stride=s, padding=pad),
                           nn.BatchNorm2d(c, eps=1e-5, momentum=0.1), nn.ReLU()]
                if name in POOLS:
                    _, size, stride = POOLS[name]
                    layers.append(nn.MaxPool2d(size, stride))
                if name == "fc6":
                    self.trunk = nn.Sequential(*layers)
                    layers = []
                cin = c
            self.head = nn.Sequential(*layers, nn.Conv2d(cin, 8, 1))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            h = self.trunk(self.front(x))
            h = h.mean(dim=3, keepdim=True)                        # pool6
            return self.head(h).flatten(1)
    return Student()


@stage("student-train-step", group="student", unit="clips/s")
def train_step_stage(ctx) -> Pair:
    import keras
    import tensorflow as tf
    import torch
    from ..models import build_model
    from ..training.distiller import Distiller
    from ..training.optim import sgd
    width, batch, length = (0.125, 8, 24160) if ctx.quick else (0.25, 16, TRAIN_CROP_SAMPLES)
    steps = 2
    x = _clips(batch, length, seed=1)
    z = np.random.default_rng(2).standard_normal((batch, 8)).astype(np.float32)
    keras.utils.set_random_seed(0)
    student = build_model("emovoxceleb-student", width=width, dither=False)
    d = Distiller(student, weight_decay=5e-4)
    d.compile(optimizer=sgd(1e-3, 0.9))
    ds = tf.data.Dataset.from_tensors((tf.constant(x), {"logits": tf.constant(z)})).repeat()

    def ours():
        d.fit(ds.take(steps), verbose=0, shuffle=False)
        return batch * steps

    torch.set_num_threads(cpu_count())
    net = torch_student(width)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    xt, zt = torch.from_numpy(x), torch.from_numpy(z)

    def peer():
        net.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            out = net(xt)
            p = torch.softmax(zt / 2, dim=1)
            loss = -(p * torch.log_softmax(out / 2, dim=1)).sum(1).mean()
            loss.backward()
            opt.step()
        return batch * steps
    return Pair(ours, peer, f"pytorch {torch.__version__} (same net, {cpu_count()} threads)",
                ours_cores=cpu_count(), peer_cores=cpu_count(),
                note=f"width {width}, batch {batch}, {length} samples, {steps} steps per call")
