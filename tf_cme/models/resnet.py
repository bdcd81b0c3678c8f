"""The FER+ teachers: VGGFace2 ResNet-50 and SE-ResNet-50 (protocol §4.1), Keras functional.

Caffe-style bottlenecks as in the MatConvNet / pytorch-mcn conversions
(``resnet50_ferplus_dag``, ``senet50_ferplus_dag``):

- stem ``conv1_7x7_s2`` (7x7/2, pad 3, no bias) + ``conv1_7x7_s2_bn`` + ReLU, then
  ``pool1_3x3_s2``: 3x3/2 max pool in *ceil* mode (the input is padded at the bottom
  and right so that the output size is ``ceil((H - 3) / 2) + 1``);
- stages conv2..conv5 with [3, 4, 6, 3] bottlenecks ``convS_B_1x1_reduce`` ->
  ``convS_B_3x3`` -> ``convS_B_1x1_increase`` (each + ``_bn``), the down-sampling
  stride 2 in the first 1x1 (``reduce``) and in the projection ``convS_1_1x1_proj``;
- convolutions without bias, BatchNorm epsilon 1e-5, momentum 0.9 (MatConvNet rate 0.1);
- SE-ResNet: on every bottleneck, ``convS_B_global_pool`` -> ``convS_B_1x1_down``
  (C -> C/16, biased) -> ReLU -> ``convS_B_1x1_up`` (biased) -> sigmoid
  (``convS_B_prob``) scaling the ``1x1_increase`` BN output before the shortcut sum;
- head: global average pooling ``pool5`` (identical to the original ``pool5_7x7_s1`` at
  224x224, and valid at any input size), the 1x1-convolution ``classifier`` (8 outputs,
  biased) and ``prediction`` (flatten): 8 logits in FER+ order;
- the fine-tuned models' dropout: ResNet after ``conv5_3_3x3`` and after
  ``conv5_3_1x1_increase`` (before their BN); SE-ResNet after ``conv5_3_1x1_down`` and
  ``conv5_3_1x1_up`` (``configureForClassification``'s "2nd and 3rd to last convs").

The model owns its preprocessing (:class:`TeacherPreprocess`, layer ``preprocess``):
uint8 images ``[B, H, W, C]`` of any size: C = 1 (grey FER+ faces: minus the RGB channel
means, then the original's single align-corners ``vl_nnbilinearsampler`` interpolation to
the input size, protocol §4.2-4.3) or 3 (RGB, resized to the input size (bilinear,
antialiased), converted with MATLAB's ``rgb2gray`` weights and rounded, protocol §4.4,
replicated to 3 channels, minus the means).

``width`` multiplies every channel count (tests and the demo run these networks small).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .. import emotions
from .registry import register

from ..vision.faces import RGB2GRAY   # the one definition of the rgb2gray weights
#: VGGFace2 RGB channel means (``meta.normalization.averageImage``), std 1.
MEAN_RGB = (131.0912, 103.8827, 91.4953)
INPUT_SIZE = 224
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
STAGES = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)      # bottleneck widths; outputs are 4x
SE_REDUCTION = 16


@keras.saving.register_keras_serializable(package="tf_cme")
class TeacherPreprocess(layers.Layer):
    """uint8 ``[B, H, W, C]`` (C = 1 or 3, any H, W) -> float32 ``[B, S, S, 3]`` minus mean.

    Grey input (the FER+ faces, protocol §4.2-4.3): replicated to 3 channels, minus the RGB
    means, then ONE ``vl_nnbilinearsampler`` interpolation to ``S x S`` on the align-corners
    grid (:func:`tf_cme.vision.resample.affine_sample`; out-of-image taps are 0, the mean
    colour); ``affine`` (``[B, 2, 3]``, the training augmentation of
    :func:`tf_cme.data.pipelines.ferplus_affine`) changes that grid, in the same
    interpolation. RGB input (VoxCeleb frames, protocol §4.4): resized to ``S x S`` as
    ``vl_imreadjpeg`` does (bilinear, antialiased; an identity at ``S x S``, which is what
    the frame pipelines give), rounded to 0..255, ``round(rgb2gray)``, replicated, minus
    the means (with ``affine``, then resampled on that grid as grey input is).
    """

    def __init__(self, input_size: int = INPUT_SIZE, mean=MEAN_RGB, **kwargs):
        super().__init__(**kwargs)
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)

    def _resize(self, x):
        """Bilinear; antialiased unless the (static) size shows no downscaling, where the
        two agree: then an identity or a plain bilinear upsampling (XLA-compatible)."""
        s = self.input_size
        h, w = x.shape[1], x.shape[2]
        if h == s and w == s:
            return x
        down = h is None or w is None or h > s or w > s
        return ops.image.resize(x, (s, s), interpolation="bilinear", antialias=down)

    def _from_rgb(self, x, affine):
        x = self._resize(x[..., :3])
        x = ops.clip(ops.round(x), 0.0, 255.0)
        w = ops.convert_to_tensor(RGB2GRAY, dtype="float32")
        grey = ops.round(ops.sum(x * w, axis=-1, keepdims=True))
        grey = ops.reshape(grey, (-1, self.input_size, self.input_size, 1))
        if affine is None:
            return self._centred(grey)
        return self._sample(grey, affine)

    def _centred(self, grey):
        mean = ops.convert_to_tensor(self.mean, dtype="float32")
        return ops.repeat(grey, 3, axis=-1) - mean

    def _sample(self, grey, affine):
        from ..vision.resample import affine_sample
        return affine_sample(self._centred(grey), self.input_size, affine)

    def call(self, images, affine=None):
        x = ops.cast(images, "float32")
        channels = images.shape[-1]
        if channels == 3:
            out = self._from_rgb(x, affine)
        elif channels == 1:
            out = self._sample(x[..., :1], affine)
        else:   # channel count only known when the graph runs
            out = ops.cond(ops.equal(ops.shape(x)[-1], 3),
                           lambda: self._from_rgb(x, affine),
                           lambda: self._sample(x[..., :1], affine))
        return ops.reshape(out, (-1, self.input_size, self.input_size, 3))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.input_size, self.input_size, 3)

    def get_config(self):
        return {**super().get_config(), "input_size": self.input_size, "mean": list(self.mean)}


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _conv(x, filters, kernel, name, strides=1, padding=0, use_bias=False):
    if padding:
        x = layers.ZeroPadding2D(padding, name=name + "_pad")(x)
    return layers.Conv2D(filters, kernel, strides=strides, padding="valid",
                         use_bias=use_bias, name=name,
                         kernel_initializer="he_normal")(x)


def _bn(x, name, gamma="ones", synchronized=False):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name,
                                     gamma_initializer=gamma, synchronized=synchronized)(x)


def _bottleneck(x, prefix, mid, out, strides, project, se, drop: dict, zero_init: bool,
                sync: bool = False):
    """One Caffe-style bottleneck ``prefix`` (e.g. ``conv3_1``)."""
    shortcut = x
    y = _conv(x, mid, 1, prefix + "_1x1_reduce", strides=strides)
    y = _bn(y, prefix + "_1x1_reduce_bn", synchronized=sync)
    y = layers.ReLU(name=prefix + "_1x1_reduce_relu")(y)
    y = _conv(y, mid, 3, prefix + "_3x3", padding=1)
    if prefix + "_3x3" in drop:
        y = layers.Dropout(drop[prefix + "_3x3"], name=prefix + "_3x3_drop")(y)
    y = _bn(y, prefix + "_3x3_bn", synchronized=sync)
    y = layers.ReLU(name=prefix + "_3x3_relu")(y)
    y = _conv(y, out, 1, prefix + "_1x1_increase")
    if prefix + "_1x1_increase" in drop:
        y = layers.Dropout(drop[prefix + "_1x1_increase"], name=prefix + "_1x1_increase_drop")(y)
    # residual branch starts at zero (BN scale 0) when trained from scratch: every block
    # is the identity at initialisation, which trains deep ResNets much faster
    y = _bn(y, prefix + "_1x1_increase_bn", gamma="zeros" if zero_init else "ones",
            synchronized=sync)
    if se:
        s = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "_global_pool")(y)
        s = _conv(s, max(1, out // SE_REDUCTION), 1, prefix + "_1x1_down", use_bias=True)
        if prefix + "_1x1_down" in drop:
            s = layers.Dropout(drop[prefix + "_1x1_down"], name=prefix + "_1x1_down_drop")(s)
        s = layers.ReLU(name=prefix + "_1x1_down_relu")(s)
        s = _conv(s, out, 1, prefix + "_1x1_up", use_bias=True)
        if prefix + "_1x1_up" in drop:
            s = layers.Dropout(drop[prefix + "_1x1_up"], name=prefix + "_1x1_up_drop")(s)
        s = layers.Activation("sigmoid", name=prefix + "_prob")(s)
        y = layers.Multiply(name=prefix + "_scale")([y, s])
    if project:
        shortcut = _conv(x, out, 1, prefix + "_1x1_proj", strides=strides)
        shortcut = _bn(shortcut, prefix + "_1x1_proj_bn", synchronized=sync)
    y = layers.Add(name=prefix)([y, shortcut])
    return layers.ReLU(name=prefix + "_relu")(y)


def build_resnet(*, se: bool, width: float = 1.0, input_size: int = INPUT_SIZE,
                 dropout: float = 0.5, num_classes: int = emotions.NUM_CLASSES,
                 mean=MEAN_RGB, zero_init_residual: bool = True,
                 name: str | None = None, synchronized: bool = False) -> keras.Model:
    """VGGFace2 ResNet-50 (``se=False``) or SE-ResNet-50 (``se=True``) with an
    ``num_classes``-way 1x1-convolution classifier and the model's own preprocessing.
    ``synchronized``: batch normalisation over the global batch of every replica (training
    under a distribution strategy); no effect in inference."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if input_size < 32:
        raise ValueError(f"input_size must be at least 32 (5 stride-2 stages), got {input_size}")
    if se:
        drop = {"conv5_3_1x1_down": dropout, "conv5_3_1x1_up": dropout}
    else:
        drop = {"conv5_3_3x3": dropout, "conv5_3_1x1_increase": dropout}
    drop = {k: v for k, v in drop.items() if v and v > 0}

    images = keras.Input(shape=(None, None, None), dtype="uint8", name="image")
    x = TeacherPreprocess(input_size, mean, name="preprocess")(images)
    x = _conv(x, _ch(64, width), 7, "conv1_7x7_s2", strides=2, padding=3)
    x = _bn(x, "conv1_7x7_s2_bn", synchronized=synchronized)
    x = layers.ReLU(name="conv1_relu_7x7_s2")(x)
    # 3x3/2 max pool, ceil mode: pad bottom/right so out = ceil((h - 3) / 2) + 1. Zero
    # padding is exact here: the input is post-ReLU (>= 0) and every window holds a
    # real pixel.
    h = x.shape[1]
    out_h = -(-(h - 3) // 2) + 1
    extra = (out_h - 1) * 2 + 3 - h
    if extra > 0:
        x = layers.ZeroPadding2D(((0, extra), (0, extra)), name="pool1_3x3_s2_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1_3x3_s2")(x)

    for s, (blocks, mid) in enumerate(zip(STAGES, STAGE_WIDTHS)):
        for b in range(blocks):
            x = _bottleneck(x, f"conv{s + 2}_{b + 1}", _ch(mid, width), _ch(4 * mid, width),
                            strides=2 if (b == 0 and s > 0) else 1, project=(b == 0),
                            se=se, drop=drop, zero_init=zero_init_residual,
                            sync=synchronized)

    x = layers.GlobalAveragePooling2D(keepdims=True, name="pool5")(x)
    x = layers.Conv2D(num_classes, 1, use_bias=True, name="classifier",
                      kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=0),
                      bias_initializer="zeros")(x)
    logits = layers.Flatten(name="prediction")(x)
    return keras.Model(images, logits,
                       name=name or ("senet50_ferplus" if se else "resnet50_ferplus"))


_METADATA = {"input_size": INPUT_SIZE, "mean": list(MEAN_RGB), "std": [1.0, 1.0, 1.0],
             "colour": "grey", "input_dtype": "uint8", "class_names": list(emotions.FERPLUS),
             "embedding_layer": "pool5"}
_DEFAULTS = {"width": 1.0, "input_size": INPUT_SIZE, "dropout": 0.5,
             "num_classes": emotions.NUM_CLASSES, "synchronized": False}


@register("resnet50-ferplus", kind="teacher", metadata=_METADATA, defaults=_DEFAULTS,
          description="VGGFace2 ResNet-50 fine-tuned on FER+ (hard labels), protocol §4.1")
def resnet50_ferplus(width: float = 1.0, input_size: int = INPUT_SIZE, dropout: float = 0.5,
                     num_classes: int = emotions.NUM_CLASSES, synchronized: bool = False) -> keras.Model:
    return build_resnet(se=False, width=width, input_size=input_size, dropout=dropout,
                        num_classes=num_classes, synchronized=synchronized)


@register("senet50-ferplus", kind="teacher", metadata=_METADATA, defaults=_DEFAULTS,
          description="VGGFace2 SE-ResNet-50 fine-tuned on FER+ (vote distributions), "
                      "protocol §4.1")
def senet50_ferplus(width: float = 1.0, input_size: int = INPUT_SIZE, dropout: float = 0.5,
                    num_classes: int = emotions.NUM_CLASSES, synchronized: bool = False) -> keras.Model:
    return build_resnet(se=True, width=width, input_size=input_size, dropout=dropout,
                        num_classes=num_classes, synchronized=synchronized)


def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of the model's Conv2D layers, in layer order."""
    return [l.name for l in model.layers if isinstance(l, layers.Conv2D)]


def bn_layer_names(model: keras.Model) -> list[str]:
    return [l.name for l in model.layers if isinstance(l, layers.BatchNormalization)]
