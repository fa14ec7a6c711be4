"""Region proposal network: the shared `rpn_model` head and the ProposalLayer.

Shapes (A = anchors over all pyramid levels, k = len(RPN_ANCHOR_RATIOS)):
  rpn_model(P [B, h, w, D]) -> logits [B, h*w*k, 2], probs [B, h*w*k, 2], deltas [B, h*w*k, 4]
  ProposalLayer([probs [B, A, 2], deltas [B, A, 4], anchors [B, A, 4] normalized])
      -> proposals [B, proposal_count, 4], normalized, zero-padded.
"""
import tensorflow as tf
import keras
from keras import layers as KL

from mrcnn.box_ops import apply_box_deltas_graph, clip_boxes_graph, pad_rows
from mrcnn.precision import FLOAT32_LAYER, Float32Layer


def rpn_graph(feature_map, anchors_per_location, anchor_stride):
    """Apply the RPN head to one feature map; returns [logits, probs, deltas]."""
    shared = KL.Conv2D(512, 3, padding="same", activation="relu", strides=anchor_stride,
                       name="rpn_conv_shared")(feature_map)
    # The 1x1 prediction convs and what follows them compute in float32 (precision.py).
    x = KL.Conv2D(2 * anchors_per_location, 1, name="rpn_class_raw", **FLOAT32_LAYER)(shared)
    logits = KL.Reshape((-1, 2), **FLOAT32_LAYER)(x)
    probs = KL.Activation("softmax", name="rpn_class_xxx", **FLOAT32_LAYER)(logits)
    x = KL.Conv2D(4 * anchors_per_location, 1, name="rpn_bbox_pred", **FLOAT32_LAYER)(shared)
    deltas = KL.Reshape((-1, 4), **FLOAT32_LAYER)(x)
    return [logits, probs, deltas]


def build_rpn_model(anchor_stride, anchors_per_location, depth):
    """The shared RPN as a nested Keras model named `rpn_model` (as in Matterport's files)."""
    feature_map = KL.Input(shape=[None, None, depth], name="input_rpn_feature_map")
    outputs = rpn_graph(feature_map, anchors_per_location, anchor_stride)
    return keras.Model([feature_map], outputs, name="rpn_model")


def _nms_padded(boxes, scores, max_out, iou_threshold):
    """Greedy NMS of one image's boxes [N, 4] -> kept boxes zero-padded to [max_out, 4]."""
    keep = tf.image.non_max_suppression(boxes, scores, max_out, iou_threshold)
    return pad_rows(tf.gather(boxes, keep), max_out)


class ProposalLayer(Float32Layer):
    """Top PRE_NMS_LIMIT anchors by score, refined by their deltas, clipped to the image and
    thinned by NMS to `proposal_count` boxes per image (zero-padded)."""

    def __init__(self, proposal_count, nms_threshold, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.proposal_count = proposal_count
        self.nms_threshold = nms_threshold

    def call(self, inputs):
        probs, deltas, anchors = inputs
        scores = probs[:, :, 1]
        deltas = deltas * tf.reshape(tf.constant(self.config.RPN_BBOX_STD_DEV, tf.float32), [1, 1, 4])
        pre_nms = tf.minimum(self.config.PRE_NMS_LIMIT, tf.shape(anchors)[1])
        scores, ix = tf.math.top_k(scores, pre_nms, sorted=True, name="top_anchors")
        deltas = tf.gather(deltas, ix, batch_dims=1)
        anchors = tf.gather(anchors, ix, batch_dims=1)
        boxes = apply_box_deltas_graph(anchors, deltas)
        boxes = clip_boxes_graph(boxes, tf.constant([0., 0., 1., 1.]))
        return tf.map_fn(
            lambda a: _nms_padded(a[0], a[1], self.proposal_count, self.nms_threshold),
            (boxes, scores), fn_output_signature=tf.TensorSpec([self.proposal_count, 4], tf.float32))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.proposal_count, 4)
