"""ResNet-50/101 backbone and the feature pyramid (FPN), with Matterport's layer names.

Tensors are NHWC float32. For an input image [B, H, W, 3] (H, W multiples of 64):
C2 [B, H/4, W/4, 256], C3 [B, H/8, W/8, 512], C4 [B, H/16, W/16, 1024], C5 [B, H/32, W/32, 2048];
P2..P5 have TOP_DOWN_PYRAMID_SIZE channels at strides 4..32 and P6 is P5 subsampled (stride 64).
With PYRAMID_MIN_LEVEL = 3 the pyramid starts at P3 (no P2 computed).
"""
import math

import numpy as np
from keras import layers as KL
from keras import ops


class BatchNorm(KL.BatchNormalization):
    """BatchNormalization whose mode is fixed when it is built.

    `train_bn` is config.TRAIN_BN: False always normalises with the moving statistics
    (frozen BN, Matterport's default for small batches), True always with the batch
    statistics, None follows the `training` flag of the call.
    """

    def __init__(self, *args, train_bn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_bn = train_bn

    def call(self, inputs, training=None, **kwargs):
        if self.train_bn is not None:
            training = self.train_bn
        if training and self.trainable:
            return super().call(inputs, training=True, **kwargs)
        # Moving statistics: one multiply-add in the compute dtype (no float32 round trip
        # under bfloat16); scale and offset are formed in float32 from the variables.
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        offset = self.beta - self.moving_mean * scale
        return inputs * ops.cast(scale, inputs.dtype) + ops.cast(offset, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "train_bn": self.train_bn}


def _conv_bn(x, filters, kernel, name, train_bn, strides=1, padding="valid", relu=True):
    """Conv (with bias, as in Matterport) -> BatchNorm -> optional ReLU. Names res*/bn*."""
    x = KL.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=True,
                  name="res" + name)(x)
    x = BatchNorm(train_bn=train_bn, name="bn" + name)(x)
    return KL.Activation("relu")(x) if relu else x


def identity_block(input_tensor, kernel_size, filters, stage, block, use_bias=True, train_bn=True):
    """Bottleneck block whose shortcut is the identity. Output channels = filters[2]."""
    f1, f2, f3 = filters
    base = f"{stage}{block}_branch"
    x = _conv_bn(input_tensor, f1, 1, base + "2a", train_bn)
    x = _conv_bn(x, f2, kernel_size, base + "2b", train_bn, padding="same")
    x = _conv_bn(x, f3, 1, base + "2c", train_bn, relu=False)
    x = KL.Add()([x, input_tensor])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(x)


def conv_block(input_tensor, kernel_size, filters, stage, block, strides=(2, 2), use_bias=True,
               train_bn=True):
    """Bottleneck block with a projection shortcut; the stride sits on branch2a and branch1."""
    f1, f2, f3 = filters
    base = f"{stage}{block}_branch"
    x = _conv_bn(input_tensor, f1, 1, base + "2a", train_bn, strides=strides)
    x = _conv_bn(x, f2, kernel_size, base + "2b", train_bn, padding="same")
    x = _conv_bn(x, f3, 1, base + "2c", train_bn, relu=False)
    shortcut = _conv_bn(input_tensor, f3, 1, base + "1", train_bn, strides=strides, relu=False)
    x = KL.Add()([x, shortcut])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(x)


STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}


def resnet_graph(input_image, architecture, stage5=False, train_bn=True):
    """Build ResNet on `input_image` [B, H, W, C]; returns [C1, C2, C3, C4, C5] (C5 None
    unless stage5)."""
    if architecture not in STAGE4_BLOCKS:
        raise ValueError(f"BACKBONE must be 'resnet50', 'resnet101' or 'small', not "
                         f"{architecture!r}")
    x = KL.ZeroPadding2D((3, 3))(input_image)
    x = KL.Conv2D(64, 7, strides=2, use_bias=True, name="conv1")(x)
    x = BatchNorm(train_bn=train_bn, name="bn_conv1")(x)
    x = KL.Activation("relu")(x)
    c1 = x = KL.MaxPooling2D(3, strides=2, padding="same")(x)
    x = conv_block(x, 3, [64, 64, 256], 2, "a", strides=(1, 1), train_bn=train_bn)
    x = identity_block(x, 3, [64, 64, 256], 2, "b", train_bn=train_bn)
    c2 = x = identity_block(x, 3, [64, 64, 256], 2, "c", train_bn=train_bn)
    x = conv_block(x, 3, [128, 128, 512], 3, "a", train_bn=train_bn)
    for block in "bcd":
        x = identity_block(x, 3, [128, 128, 512], 3, block, train_bn=train_bn)
    c3 = x
    x = conv_block(x, 3, [256, 256, 1024], 4, "a", train_bn=train_bn)
    for i in range(STAGE4_BLOCKS[architecture]):
        x = identity_block(x, 3, [256, 256, 1024], 4, chr(98 + i), train_bn=train_bn)
    c4 = x
    c5 = None
    if stage5:
        x = conv_block(x, 3, [512, 512, 2048], 5, "a", train_bn=train_bn)
        x = identity_block(x, 3, [512, 512, 2048], 5, "b", train_bn=train_bn)
        c5 = identity_block(x, 3, [512, 512, 2048], 5, "c", train_bn=train_bn)
    return [c1, c2, c3, c4, c5]


def small_backbone_graph(input_image, stage5=True, train_bn=None):
    """BACKBONE = "small" (our addition): a 10-layer conv net with ResNet's strides (C1..C5 at
    2..32, 16..128 channels), about 0.4 M parameters. For quick demos and tests on a CPU;
    no pretrained weights exist for it."""
    outputs, x = [], input_image
    for i, width in enumerate([16, 32, 64, 96, 128], start=1):
        x = KL.Conv2D(width, 3, strides=2, padding="same", name=f"small_conv{i}")(x)
        x = KL.Activation("relu")(BatchNorm(train_bn=train_bn, name=f"small_bn{i}")(x))
        x = KL.Conv2D(width, 3, padding="same", activation="relu", name=f"small_conv{i}b")(x)
        outputs.append(x)
    return outputs


def build_backbone(input_image, config):
    """[C1..C5] of config.BACKBONE: resnet50, resnet101, small, or a callable."""
    if callable(config.BACKBONE):
        return config.BACKBONE(input_image, stage5=True, train_bn=config.TRAIN_BN)
    if config.BACKBONE == "small":
        return small_backbone_graph(input_image, train_bn=config.TRAIN_BN)
    return resnet_graph(input_image, config.BACKBONE, stage5=True, train_bn=config.TRAIN_BN)


def fpn_graph(c2, c3, c4, c5, depth, min_level=2):
    """Top-down feature pyramid with `depth` channels per level.

    Returns ([P{min_level}, ..., P6], unused layers). With min_level 3 the P2 layers
    (fpn_c2p2, fpn_p2) are created and built but not applied, so that the weights file keeps
    Matterport's layout; they come back as the unused list (see weights.attach_unused_layers).
    """
    if min_level not in (2, 3):
        raise ValueError(f"PYRAMID_MIN_LEVEL must be 2 or 3, not {min_level!r}")
    p5 = KL.Conv2D(depth, 1, name="fpn_c5p5")(c5)
    p4 = KL.Add(name="fpn_p4add")([KL.UpSampling2D(2, name="fpn_p5upsampled")(p5),
                                   KL.Conv2D(depth, 1, name="fpn_c4p4")(c4)])
    p3 = KL.Add(name="fpn_p3add")([KL.UpSampling2D(2, name="fpn_p4upsampled")(p4),
                                   KL.Conv2D(depth, 1, name="fpn_c3p3")(c3)])
    lateral2 = KL.Conv2D(depth, 1, name="fpn_c2p2")
    output2 = KL.Conv2D(depth, 3, padding="same", name="fpn_p2")
    unused = []
    if min_level == 2:
        p2 = KL.Add(name="fpn_p2add")([KL.UpSampling2D(2, name="fpn_p3upsampled")(p3),
                                       lateral2(c2)])
        maps = [output2(p2)]
    else:
        lateral2.build((None, None, None, c2.shape[-1]))
        output2.build((None, None, None, depth))
        unused, maps = [lateral2, output2], []
    maps += [KL.Conv2D(depth, 3, padding="same", name=f"fpn_p{i}")(p)
             for i, p in zip(range(3, 6), (p3, p4, p5))]
    maps.append(KL.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(maps[-1]))
    return maps, unused


def compute_backbone_shapes(config, image_shape):
    """Feature-map sizes [levels, 2] (rows, cols) for each stride of BACKBONE_STRIDES.
    A callable BACKBONE may come with COMPUTE_BACKBONE_SHAPE; without it the strides rule
    (ceil(side / stride)) is used, as for the built-in backbones."""
    if callable(config.BACKBONE) and config.COMPUTE_BACKBONE_SHAPE is not None:
        return config.COMPUTE_BACKBONE_SHAPE(image_shape)
    return np.array([[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
                     for s in config.BACKBONE_STRIDES])
