"""Second-stage heads on pooled ROIs: classifier + box regressor, and the mask head.

Matterport wraps these layers in TimeDistributed; we fold the ROI axis into the batch axis
([B, R, ...] -> [B*R, ...]) and apply plain layers with the same names and weight shapes,
which is the same computation without the wrapper's overhead. R may be dynamic.
  fpn_classifier_graph -> logits [B, R, NC], probs [B, R, NC], deltas [B, R, NC, 4]
  build_fpn_mask_graph -> masks [B, R, 28, 28, NC] (sigmoid probabilities)
"""
import math

import tensorflow as tf
from keras import layers as KL
from keras import ops

from mrcnn.backbone import BatchNorm
from mrcnn.precision import FLOAT32_LAYER
from mrcnn.roi import PyramidROIAlign


def _fold(x):
    """[B, R, ...] -> [B*R, ...]."""
    return ops.reshape(x, (-1,) + tuple(x.shape[2:]))


class Unfold(KL.Layer):
    """[B*R, ...] -> [B, R, ...] with B and R taken from rois [B, R, 4] at run time."""

    def call(self, inputs):
        x, rois = inputs
        return tf.reshape(x, tf.concat([tf.shape(rois)[:2], tf.shape(x)[1:]], 0))

    def compute_output_shape(self, input_shape):
        x_shape, rois_shape = input_shape
        return tuple(rois_shape[:2]) + tuple(x_shape[1:])


def _unfold(x, rois):
    return Unfold(dtype=x.dtype)([x, rois])


class WholeInputConv2D(KL.Conv2D):
    """Conv2D whose kernel spans its whole input: [N, k, k, C] -> [N, 1, 1, filters] with
    "valid" padding, computed as one matmul of the input flattened to [N, k*k*C] with the
    kernel [k, k, C, filters] flattened the same way. Same weights, names and result as
    Conv2D; on CPUs without bfloat16 (TF 2.21, AVX2) Conv2D's backward pass for the
    classifier's 7x7 layer took 2.5 s per step against 0.04 s for the matmul."""

    def build(self, input_shape):
        if tuple(input_shape[1:3]) != tuple(self.kernel_size):
            raise ValueError(f"{self.name}: the {self.kernel_size} kernel must span the whole "
                             f"input, which is {tuple(input_shape[1:3])}")
        super().build(input_shape)

    def convolution_op(self, inputs, kernel):
        depth = math.prod(kernel.shape[:3])
        product = ops.matmul(ops.reshape(inputs, (-1, depth)),
                             ops.reshape(kernel, (depth, self.filters)))
        return ops.reshape(product, (-1, 1, 1, self.filters))


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True,
                         fc_layers_size=1024, min_level=2, roi_canonical_size=224, dropout=0.0):
    """Classifier and box heads. rois [B, R, 4] normalized; feature_maps from P{min_level}.

    dropout: fraction of each FC layer's 1024 outputs zeroed in training (our addition, 0 =
    Matterport); Dropout layers hold no weights, so weight files are the same either way.
    """
    x = PyramidROIAlign([pool_size, pool_size], min_level=min_level,
                        canonical_size=roi_canonical_size,
                        name="roi_align_classifier")([rois, image_meta] + list(feature_maps))
    x = _fold(x)

    def fc_layer(x, i, kernel_size):
        """Matterport's "FC" layer i: a valid conv that maps [N, k, k, C] to [N, 1, 1, fc]."""
        x = WholeInputConv2D(fc_layers_size, kernel_size, name=f"mrcnn_class_conv{i}")(x)
        x = KL.Activation("relu")(BatchNorm(train_bn=train_bn, name=f"mrcnn_class_bn{i}")(x))
        return KL.Dropout(dropout, name=f"mrcnn_class_dropout{i}")(x) if dropout else x

    x = fc_layer(fc_layer(x, 1, pool_size), 2, 1)
    shared = KL.Reshape((fc_layers_size,), name="pool_squeeze")(x)
    # Prediction layers compute in float32 whatever the policy (precision.py).
    logits = KL.Dense(num_classes, name="mrcnn_class_logits", **FLOAT32_LAYER)(shared)
    probs = KL.Activation("softmax", name="mrcnn_class", **FLOAT32_LAYER)(logits)
    deltas = KL.Dense(num_classes * 4, name="mrcnn_bbox_fc", **FLOAT32_LAYER)(shared)
    deltas = KL.Reshape((num_classes, 4), name="mrcnn_bbox", **FLOAT32_LAYER)(deltas)
    return _unfold(logits, rois), _unfold(probs, rois), _unfold(deltas, rois)


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes, train_bn=True,
                         min_level=2, roi_canonical_size=224):
    """Mask head: 4 x (3x3 conv, BN, ReLU), 2x2 deconv, 1x1 sigmoid conv per class."""
    x = PyramidROIAlign([pool_size, pool_size], min_level=min_level,
                        canonical_size=roi_canonical_size,
                        name="roi_align_mask")([rois, image_meta] + list(feature_maps))
    x = _fold(x)
    for i in range(1, 5):
        x = KL.Conv2D(256, 3, padding="same", name=f"mrcnn_mask_conv{i}")(x)
        x = KL.Activation("relu")(BatchNorm(train_bn=train_bn, name=f"mrcnn_mask_bn{i}")(x))
    x = KL.Conv2DTranspose(256, 2, strides=2, activation="relu", name="mrcnn_mask_deconv")(x)
    x = KL.Conv2D(num_classes, 1, activation="sigmoid", name="mrcnn_mask", **FLOAT32_LAYER)(x)
    return _unfold(x, rois)
