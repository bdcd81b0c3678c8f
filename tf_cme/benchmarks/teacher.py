"""Teacher throughput: Keras vs an equivalent PyTorch module (group ``teacher``).

Stages (images per second at 224x224, same batch, same thread count: PyTorch gets
``torch.set_num_threads`` = TensorFlow's intra-op threads = the available cores):

- ``teacher-resnet50-infer`` / ``teacher-senet50-infer``: test-mode forward pass;
- ``teacher-resnet50-train`` / ``teacher-senet50-train``: one SGD step (forward,
  backward, MatConvNet weight decay, momentum update) in training mode;
- group ``teacher-xla`` (not in ``teacher``: XLA compiles the full training step for
  minutes on a CPU): ``teacher-resnet50-train-xla`` / ``teacher-senet50-train-xla``, the
  Keras step compiled with XLA (``jit_compile=True``), against the same PyTorch step.

The PyTorch modules below are written for the benchmark (torch is imported lazily) and
have exactly the Keras models' trainable parameter counts (23,524,424 and 26,055,416).
"""
from __future__ import annotations

import numpy as np

from .harness import Pair, cpu_count, stage

SIZE = 224
BATCH = 16
QUICK_BATCH = 2


def torch_teacher(se: bool, width: float = 1.0, num_classes: int = 8):
    """The (SE-)ResNet-50 teacher as a PyTorch module (NCHW float input, mean removed)."""
    import torch
    from torch import nn

    ch = lambda c: max(1, int(round(c * width)))  # noqa: E731

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, out, stride, project):
            super().__init__()
            self.reduce = nn.Conv2d(cin, mid, 1, stride=stride, bias=False)
            self.reduce_bn = nn.BatchNorm2d(mid, eps=1e-5, momentum=0.1)
            self.conv3 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
            self.conv3_bn = nn.BatchNorm2d(mid, eps=1e-5, momentum=0.1)
            self.increase = nn.Conv2d(mid, out, 1, bias=False)
            self.increase_bn = nn.BatchNorm2d(out, eps=1e-5, momentum=0.1)
            self.se = se
            if se:
                r = max(1, out // 16)
                self.down = nn.Conv2d(out, r, 1)
                self.up = nn.Conv2d(r, out, 1)
            self.proj = None
            if project:
                self.proj = nn.Conv2d(cin, out, 1, stride=stride, bias=False)
                self.proj_bn = nn.BatchNorm2d(out, eps=1e-5, momentum=0.1)

        def forward(self, x):
            y = torch.relu(self.reduce_bn(self.reduce(x)))
            y = torch.relu(self.conv3_bn(self.conv3(y)))
            y = self.increase_bn(self.increase(y))
            if self.se:
                s = y.mean(dim=(2, 3), keepdim=True)
                y = y * torch.sigmoid(self.up(torch.relu(self.down(s))))
            sc = x if self.proj is None else self.proj_bn(self.proj(x))
            return torch.relu(y + sc)

    class Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, ch(64), 7, stride=2, padding=3, bias=False)
            self.conv1_bn = nn.BatchNorm2d(ch(64), eps=1e-5, momentum=0.1)
            self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            blocks, cin = [], ch(64)
            for s, (n, mid) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
                for b in range(n):
                    blocks.append(Bottleneck(cin, ch(mid), ch(4 * mid),
                                             2 if (b == 0 and s > 0) else 1, b == 0))
                    cin = ch(4 * mid)
            self.blocks = nn.Sequential(*blocks)
            self.classifier = nn.Conv2d(cin, num_classes, 1)

        def forward(self, x):
            x = self.pool1(torch.relu(self.conv1_bn(self.conv1(x))))
            x = self.blocks(x)
            x = x.mean(dim=(2, 3), keepdim=True)
            return torch.flatten(self.classifier(x), 1)

    return Teacher()


def torch_param_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _threads() -> int:
    import tensorflow as tf
    n = tf.config.threading.get_intra_op_parallelism_threads()
    return n or cpu_count()


def _pair(ctx, arch: str, mode: str, xla: bool = False) -> Pair:
    import tensorflow as tf
    import torch

    from ..models import build_model
    from ..training import optim
    from ..training.teacher import per_example_loss

    threads = _threads()
    torch.set_num_threads(threads)
    batch = QUICK_BATCH if ctx.quick else BATCH
    se = arch.startswith("senet")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, (batch,), dtype=np.int32)

    model = build_model(arch)
    tmodel = torch_teacher(se)
    k_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    t_params = torch_param_count(tmodel)
    if k_params != t_params:
        raise AssertionError(f"{arch}: Keras {k_params} vs PyTorch {t_params} parameters")
    x_tf = tf.constant(images)
    y_tf = tf.constant(labels)
    mean = torch.tensor([131.0912, 103.8827, 91.4953]).view(1, 3, 1, 1)
    grey = np.round(images.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32))
    x_t = torch.from_numpy(np.repeat(grey[:, None], 3, axis=1)) - mean
    y_t = torch.from_numpy(labels.astype(np.int64))

    if mode == "infer":
        fn = tf.function(lambda x: model(x, training=False), jit_compile=xla)
        tmodel.eval()

        def ours():
            fn(x_tf).numpy()
            return batch

        def peer():
            with torch.inference_mode():
                tmodel(x_t)
            return batch
    else:
        opt = optim.sgd(0.001, momentum=0.9)
        variables = model.trainable_variables
        opt.build(variables)

        def step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(per_example_loss("softmaxlog", logits, y, None))
            grads = tape.gradient(loss, variables)
            grads = optim.matconvnet_gradients(grads, variables, 5e-4)
            opt.apply_gradients(zip(grads, variables))
            return loss
        fn = tf.function(step, jit_compile=xla)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        tmodel.train()
        lossf = torch.nn.CrossEntropyLoss()

        def ours():
            float(fn(x_tf, y_tf))
            return batch

        def peer():
            topt.zero_grad(set_to_none=True)
            loss = lossf(tmodel(x_t), y_t)
            loss.backward()
            topt.step()
            loss.item()
            return batch
    note = (f"batch {batch} at {SIZE}x{SIZE}, {threads} threads each"
            + (", Keras step with XLA" if xla else ""))
    return Pair(ours, peer, f"PyTorch {torch.__version__} (same architecture)",
                ours_cores=threads, peer_cores=threads, note=note)


@stage("teacher-resnet50-infer", "teacher", "images/s")
def resnet50_infer(ctx):
    return _pair(ctx, "resnet50-ferplus", "infer")


@stage("teacher-senet50-infer", "teacher", "images/s")
def senet50_infer(ctx):
    return _pair(ctx, "senet50-ferplus", "infer")


@stage("teacher-resnet50-train", "teacher", "images/s")
def resnet50_train(ctx):
    return _pair(ctx, "resnet50-ferplus", "train")


@stage("teacher-senet50-train", "teacher", "images/s")
def senet50_train(ctx):
    return _pair(ctx, "senet50-ferplus", "train")


@stage("teacher-resnet50-train-xla", "teacher-xla", "images/s")
def resnet50_train_xla(ctx):
    return _pair(ctx, "resnet50-ferplus", "train", xla=True)


@stage("teacher-senet50-train-xla", "teacher-xla", "images/s")
def senet50_train_xla(ctx):
    return _pair(ctx, "senet50-ferplus", "train", xla=True)
