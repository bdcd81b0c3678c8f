"""GPU benchmarks on Keras's JAX backend (group ``gpu``; opt-in, issue 16.4).

TensorFlow is not needed for these stages: the models are written with ``keras.ops``, so
the very networks ``build_model`` returns run on Keras's JAX backend, which is what a GPU
host without TensorFlow (or with a TensorFlow that does not see its GPU) can measure.
Run them with::

    KERAS_BACKEND=jax python scripts/bench.py --backend jax --only gpu --in-process --out bench-gpu.json

Each stage times our network under ``jax.jit`` beside the same network in PyTorch on the
same device, in the same process, A B A B (:mod:`.harness`): PyTorch eager, and for the
training steps also ``torch.compile`` (an extra peer, ``row["extra"]``). Both sides run
bfloat16 mixed precision (Keras ``mixed_bfloat16``; PyTorch ``torch.autocast(bfloat16)``),
both keep the spectrogram front end in float32 (our ``Spectrogram`` layer computes in
float32 whatever the policy), and both synchronise with the device before a call returns
(``jax.block_until_ready`` / ``torch.cuda.synchronize``).

- ``gpu-frontend`` (clips/s): the front end on a batch of 4.024 s clips; the note gives
  its largest deviation from the float32 NumPy/SciPy reference on the same clips, so a
  GPU's reduced-precision matrix units (TF32) would show here.
- ``gpu-student-train-b64`` / ``-b256`` (clips/s): one distillation step (front end,
  VGGVox student at full width, hot-cross-ent at T = 2, MatConvNet SGD: momentum 0.9,
  weight decay 5e-4 on the kernels) written as a stateless JAX step over the Keras model
  (:func:`jax_train_step`; tests/test_bench_gpu.py checks it against the TensorFlow
  ``Distiller``'s step).
- ``gpu-teacher-resnet50-train`` / ``-senet50-train`` (images/s): one SGD step of the
  teacher at 224 px, batch 256, from uint8 images (our model's preprocessing layer is
  inside the step; the PyTorch peer is given preprocessed float input);
- ``gpu-teacher-resnet50-infer`` / ``-senet50-infer`` (images/s): test-mode forward.

``--quick`` shrinks every size so that the stages run on a CPU in seconds (the test
suite does that); the figures the README quotes come from a full run on a GPU.
"""
from __future__ import annotations

import numpy as np

from ..audio.constants import TRAIN_CROP_SAMPLES
from .harness import Pair, stage

GROUP = "gpu"
#: the policy both sides train under
POLICY = "mixed_bfloat16"
#: steps per timed call (full run / --quick)
STEPS, QUICK_STEPS = 10, 1
STUDENT_WIDTH, QUICK_STUDENT_WIDTH = 1.0, 0.125
QUICK_STUDENT_SAMPLES = 24160
TEACHER_BATCH, QUICK_TEACHER_BATCH = 256, 2
TEACHER_SIZE, QUICK_TEACHER_SIZE = 224, 64
QUICK_TEACHER_WIDTH = 0.125
FRONTEND_BATCH, QUICK_FRONTEND_BATCH = 256, 4


def require_jax():
    """Fail clearly unless Keras runs on JAX (the backend is fixed when keras is imported)."""
    import keras
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"the {GROUP} stages run on Keras's JAX backend, but Keras is on "
            f"{keras.backend.backend()!r}: run scripts/bench.py --backend jax --only {GROUP}")


def _sync_jax(tree):
    import jax
    jax.block_until_ready(tree)


def _torch_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_sync(dev):
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize()


def device_env() -> dict:
    """What a row was measured on: JAX's device, PyTorch's device, the versions."""
    import jax
    import keras
    import torch
    d = jax.devices()[0]
    dev = _torch_device()
    return {"keras": keras.__version__, "keras_backend": keras.backend.backend(),
            "jax": jax.__version__, "jax_device": f"{d.platform}:{d.device_kind}",
            "torch": torch.__version__,
            "torch_device": (torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"),
            "policy": POLICY,
            # TensorFlow takes no part in these rows (an installed one is not imported)
            "tensorflow": None, "onednn": None}


def _set_policy():
    import keras
    keras.mixed_precision.set_global_policy(POLICY)


# ------------------------------------------------------------------ our JAX steps
def jax_train_step(model, loss, weight_decay: float, learning_rate: float = 1e-3,
                   momentum: float = 0.9, decayed=None):
    """A jitted stateless SGD step over a Keras ``model`` on the JAX backend.

    ``loss(targets, logits) -> per-example losses``; the step minimises their mean, adds
    the MatConvNet weight decay to the gradients of the variables ``decayed`` selects
    (default: every trainable variable; :func:`tf_cme.training.optim.matconvnet_gradients`,
    the same function the TensorFlow trainers use) and applies ``optim.sgd``.
    Returns ``(step, state)``: ``step(state, x, targets) -> (loss, state)``, ``state`` the
    model's and optimizer's variable values, and ``write_back(state)`` stores a state in
    the model (for checks).
    """
    import jax
    from keras import ops

    from ..training.optim import matconvnet_gradients, sgd

    opt = sgd(learning_rate, momentum)
    tvars = model.trainable_variables
    opt.build(tvars)
    mask = [True if decayed is None else bool(decayed(v)) for v in tvars]

    def loss_fn(tv, ntv, x, targets):
        logits, ntv = model.stateless_call(tv, ntv, x, training=True)
        return ops.mean(loss(targets, ops.cast(logits, "float32"))), ntv

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, x, targets):
        tv, ntv, ov = state
        (value, ntv), grads = grad_fn(tv, ntv, x, targets)
        keep = {id(w): m for w, m in zip(tv, mask)}
        grads = matconvnet_gradients(grads, tv, weight_decay,
                                     decay_filter=lambda w: keep[id(w)])
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return value, (tv, ntv, ov)

    state = ([v.value for v in tvars], [v.value for v in model.non_trainable_variables],
             [v.value for v in opt.variables])

    def write_back(st):
        for v, a in zip(tvars, st[0]):
            v.assign(a)
        for v, a in zip(model.non_trainable_variables, st[1]):
            v.assign(a)
        for v, a in zip(opt.variables, st[2]):
            v.assign(a)
    return jax.jit(step, donate_argnums=0), state, write_back


def _jax_runner(step, state, x, y, steps: int, units: int):
    box = {"state": state}

    def run():
        value = None
        for _ in range(steps):
            value, box["state"] = step(box["state"], x, y)
        _sync_jax(value)
        return units * steps
    return run


# ------------------------------------------------------------------ PyTorch peers
def _torch_runner(fn, dev, steps: int, units: int):
    def run():
        for _ in range(steps):
            fn()
        _torch_sync(dev)
        return units * steps
    return run


def _torch_train(net, loss_of, x, y, dev, compiled: bool, weight_decay: float):
    """One PyTorch SGD step (momentum 0.9, L2 weight decay), bf16 autocast."""
    import torch
    model = torch.compile(net) if compiled else net
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=weight_decay)

    def fn():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(x)
        loss = loss_of(out.float(), y)
        loss.backward()
        opt.step()
    return fn


def _hot_cross_ent_torch(out, z):
    import torch
    p = torch.softmax(z / 2, dim=1)
    return -(p * torch.log_softmax(out / 2, dim=1)).sum(1).mean()


def _clips(n, length, seed):
    from .student import _clips as clips
    return clips(n, length, seed=seed)


# ------------------------------------------------------------------ stages
@stage("gpu-frontend", group=GROUP, unit="clips/s")
def frontend_stage(ctx) -> Pair:
    require_jax()
    import jax
    import torch

    from ..audio.frontend import Spectrogram
    from .student import numpy_spectrogram, torch_student
    n = QUICK_FRONTEND_BATCH if ctx.quick else FRONTEND_BATCH
    steps = QUICK_STEPS if ctx.quick else STEPS
    x = _clips(n, TRAIN_CROP_SAMPLES, seed=3)
    layer = Spectrogram(dither=False)
    fn = jax.jit(lambda w: layer(w))
    xj = jax.device_put(x)
    first = np.asarray(fn(xj))
    ref = numpy_spectrogram(x)
    err = float(np.max(np.abs(first - ref)))

    def ours_once():
        return fn(xj)

    def ours():
        out = None
        for _ in range(steps):
            out = ours_once()
        _sync_jax(out)
        return n * steps

    dev = _torch_device()
    front = torch_student(0.125).front.to(dev).eval()
    xt = torch.from_numpy(x).to(dev)

    def peer_once():
        with torch.inference_mode():
            front(xt)
    return Pair(ours, _torch_runner(peer_once, dev, steps, n),
                f"PyTorch {torch.__version__} eager (same front end, float32)",
                ours_cores=1, peer_cores=1, env=device_env(),
                note=f"{n} clips of 4.024 s, float32; largest deviation from the NumPy float32 "
                     f"reference = {err:.2e} (the values are z-scores)")


def _student_stage(ctx, batch: int) -> Pair:
    require_jax()
    import jax
    import keras
    import torch

    from ..models import build_model
    from ..training import losses
    from ..training.distiller import _decayed
    from .student import torch_student
    _set_policy()
    width = QUICK_STUDENT_WIDTH if ctx.quick else STUDENT_WIDTH
    length = QUICK_STUDENT_SAMPLES if ctx.quick else TRAIN_CROP_SAMPLES
    batch = 2 if ctx.quick else batch
    steps = QUICK_STEPS if ctx.quick else STEPS
    x = _clips(batch, length, seed=1)
    z = np.random.default_rng(2).standard_normal((batch, 8)).astype(np.float32)
    keras.utils.set_random_seed(0)
    student = build_model("emovoxceleb-student", width=width, dither=False)
    step, state, _ = jax_train_step(student, losses.get("hot-cross-ent", 2.0), 5e-4,
                                    decayed=_decayed)
    ours = _jax_runner(step, state, jax.device_put(x), jax.device_put(z), steps, batch)

    dev = _torch_device()
    xt, zt = torch.from_numpy(x).to(dev), torch.from_numpy(z).to(dev)
    net = torch_student(width).to(dev)
    net.front.forward = torch.autocast(dev.type, enabled=False)(net.front.forward)
    peer = _torch_runner(_torch_train(net, _hot_cross_ent_torch, xt, zt, dev, False, 5e-4),
                         dev, steps, batch)
    extra = {}
    if not ctx.quick:
        net2 = torch_student(width).to(dev)
        net2.front.forward = torch.autocast(dev.type, enabled=False)(net2.front.forward)
        extra[f"PyTorch {torch.__version__} torch.compile"] = _torch_runner(
            _torch_train(net2, _hot_cross_ent_torch, xt, zt, dev, True, 5e-4),
            dev, steps, batch)
    return Pair(ours, peer, f"PyTorch {torch.__version__} eager (same net, bf16 autocast)",
                ours_cores=1, peer_cores=1, extra=extra, env=device_env(),
                note=f"width {width}, batch {batch}, {length} samples, {steps} steps per call, "
                     f"{POLICY}")


@stage("gpu-student-train-b256", group=GROUP, unit="clips/s")
def student_b256(ctx):
    return _student_stage(ctx, 256)


@stage("gpu-student-train-b64", group=GROUP, unit="clips/s")
def student_b64(ctx):
    return _student_stage(ctx, 64)


def _teacher_stage(ctx, arch: str, mode: str) -> Pair:
    require_jax()
    import jax
    import keras
    import torch

    from ..models import build_model
    from ..training import losses
    from .teacher import torch_param_count, torch_teacher
    _set_policy()
    se = arch.startswith("senet")
    batch = QUICK_TEACHER_BATCH if ctx.quick else TEACHER_BATCH
    size = QUICK_TEACHER_SIZE if ctx.quick else TEACHER_SIZE
    width = QUICK_TEACHER_WIDTH if ctx.quick else 1.0
    steps = QUICK_STEPS if ctx.quick else STEPS
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, (batch,), dtype=np.int32)
    onehot = np.eye(8, dtype=np.float32)[labels]
    keras.utils.set_random_seed(0)
    model = build_model(arch, width=width, input_size=size)
    tmodel = torch_teacher(se, width=width)
    k_params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if k_params != torch_param_count(tmodel):
        raise AssertionError(f"{arch}: Keras {k_params} vs PyTorch "
                             f"{torch_param_count(tmodel)} parameters")
    xj = jax.device_put(images)
    dev = _torch_device()
    mean = torch.tensor([131.0912, 103.8827, 91.4953]).view(1, 3, 1, 1)
    grey = np.round(images.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32))
    x_t = (torch.from_numpy(np.repeat(grey[:, None], 3, axis=1)) - mean).to(dev)
    x_t = x_t.contiguous(memory_format=torch.channels_last)
    y_t = torch.from_numpy(labels.astype(np.int64)).to(dev)
    tmodel = tmodel.to(dev).to(memory_format=torch.channels_last)
    extra = {}
    if mode == "infer":
        fwd = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        def ours():
            out = None
            for _ in range(steps):
                out = fwd(tv, ntv, xj)
            _sync_jax(out)
            return batch * steps
        tmodel.eval()

        def peer_once():
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
                tmodel(x_t)
        peer = _torch_runner(peer_once, dev, steps, batch)
    else:
        step, state, _ = jax_train_step(model, losses.get("softmaxlog"), 5e-4)
        ours = _jax_runner(step, state, xj, jax.device_put(onehot), steps, batch)
        tmodel.train()
        ce = torch.nn.CrossEntropyLoss()
        peer = _torch_runner(_torch_train(tmodel, ce, x_t, y_t, dev, False, 5e-4),
                             dev, steps, batch)
        if not ctx.quick and not se:
            t2 = torch_teacher(se).to(dev).to(memory_format=torch.channels_last).train()
            extra[f"PyTorch {torch.__version__} torch.compile"] = _torch_runner(
                _torch_train(t2, ce, x_t, y_t, dev, True, 5e-4), dev, steps, batch)
    return Pair(ours, peer, f"PyTorch {torch.__version__} eager (same architecture, "
                            f"bf16 autocast, channels_last)",
                ours_cores=1, peer_cores=1, extra=extra, env=device_env(),
                note=f"batch {batch} at {size}x{size}, width {width}, {steps} steps per call, "
                     f"{POLICY}; ours from uint8 (preprocessing in the step)")


@stage("gpu-teacher-resnet50-train", group=GROUP, unit="images/s")
def resnet50_train(ctx):
    return _teacher_stage(ctx, "resnet50-ferplus", "train")


@stage("gpu-teacher-resnet50-infer", group=GROUP, unit="images/s")
def resnet50_infer(ctx):
    return _teacher_stage(ctx, "resnet50-ferplus", "infer")


@stage("gpu-teacher-senet50-train", group=GROUP, unit="images/s")
def senet50_train(ctx):
    return _teacher_stage(ctx, "senet50-ferplus", "train")


@stage("gpu-teacher-senet50-infer", group=GROUP, unit="images/s")
def senet50_infer(ctx):
    return _teacher_stage(ctx, "senet50-ferplus", "infer")
