"""Where a training step and an inference spend their time, stage by stage.

    python3 bench/profile_step.py [--size 768] [--threads N] [--steps 3]
                                  [--config seed|wbc|recipe] [--dtype auto|float32|bfloat16]
                                  [--pyramid-min-level 2|3] [--inference-only]

Times cumulative prefixes of the real graphs (Keras sub-models cut at a stage's last layer):
forward only, and forward + backward to the trainable weights of the config's layers (3+;
all for `recipe`) with the sum of the means of all outputs so far as a stand-in loss. A
stage's cost is the difference between its prefix and the previous one. The last row of
each table is the real step (train_step with the optimizer; detect() with molding and
unmolding). Prints a Markdown table per mode and one JSON line. A benchmark: it prints
figures and asserts nothing.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from speed import (TwoCells, bench_arguments, make_config, start_tensorflow, timed,
                   trained_layers)  # noqa: E402


def train_stages(config):
    """[(stage, layer names whose outputs end the prefix)] of the training graph."""
    if config.BACKBONE == "small":
        backbone = ("backbone C1-C5 (small)", [f"small_conv{i}b" for i in range(2, 6)])
    else:
        backbone = ("backbone C1-C5 (ResNet)", ["res2c_out", "res3d_out", "res4f_out",
                                                "res5c_out"])
    low = config.PYRAMID_MIN_LEVEL
    return [
        backbone,
        (f"FPN P{low}-P6", [f"fpn_p{i}" for i in range(low, 7)]),
        (f"RPN head (shared conv, P{low}-P6)", ["rpn_class_logits", "rpn_class", "rpn_bbox"]),
        ("proposals (top-k, deltas, NMS)", ["ROI"]),
        ("detection targets", ["proposal_targets"]),
        ("ROIAlign + classifier/box head", ["mrcnn_class_logits", "mrcnn_bbox"]),
        ("ROIAlign + mask head", ["mrcnn_mask"]),
    ]


def infer_stages(config):
    """The same for the inference graph."""
    stages = train_stages(config)
    return stages[:2] + [
        (stages[2][0], ["rpn_class", "rpn_bbox"]),
        ("proposals (top-k, deltas, NMS)", ["ROI"]),
        ("ROIAlign + classifier/box head", ["mrcnn_class", "mrcnn_bbox"]),
        ("detections (per-class NMS)", ["mrcnn_detection"]),
        ("ROIAlign + mask head (detected rows)", ["mrcnn_mask_rows"]),
    ]


def cumulative(stages):
    """[(stage, the output layers of this stage and all before it)]: every prefix keeps the
    earlier stages' outputs in its stand-in loss, so their backward passes are counted too
    (gradients do not flow back through proposals)."""
    names = []
    return [(stage, names := names + layers) for stage, layers in stages]


def outputs_of(model, names):
    out = []
    for name in names:
        layer = model.get_layer(name)
        out += list(layer.output) if isinstance(layer.output, (list, tuple)) else [layer.output]
    return out


def prefix_timer(model, names, inputs, backward):
    """Median seconds of one call of the prefix ending at the layers in `names`."""
    import tensorflow as tf
    import keras
    sub = keras.Model(model.inputs, outputs_of(model, names))
    trainable = sub.trainable_variables

    def stand_in_loss(outs):
        return tf.add_n([tf.reduce_mean(tf.cast(o, tf.float32)) for o in tf.nest.flatten(outs)
                         if o.dtype.is_floating])

    @tf.function
    def forward(x):
        return stand_in_loss(sub(list(x), training=True))

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            loss = stand_in_loss(sub(list(x), training=True))
        grads = [g for g in tape.gradient(loss, trainable) if g is not None]
        return loss, tf.add_n([tf.reduce_sum(g) for g in grads]) if grads else loss

    fn = forward_backward if backward else forward
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(inputs))


def table(title, rows):
    lines = [f"\n{title}\n", "| stage | cumulative s | stage s | share |", "|---|---|---|---|"]
    total = rows[-1][1]
    prev = 0.0
    for name, cum in rows:
        lines.append(f"| {name} | {cum:.3f} | {cum - prev:.3f} | {100 * (cum - prev) / total:.0f}% |")
        prev = cum
    return "\n".join(lines)


def main():
    ap = bench_arguments(__doc__.split("\n")[0], steps=3)
    ap.add_argument("--inference-only", action="store_true")
    args = ap.parse_args()
    tf = start_tensorflow(args.threads)
    from mrcnn import model as modellib
    from mrcnn.data import TrainingInput, build_training_sample, get_anchors_pixels

    config = make_config(args.config, args.size, args.dtype, args.pyramid_min_level)
    data = TwoCells(args.size, config.NUM_CLASSES).dataset
    model = modellib.MaskRCNN("training", config, "/tmp/bench_logs")
    model.set_trainable(modellib.LAYER_REGEX[trained_layers(args.config)], verbose=0)
    batch = tuple(tf.constant(x) for x in next(TrainingInput(data, config, seed=0).batches()))
    from mrcnn.precision import compute_dtype
    result = {"config": args.config, "size": args.size, "threads": args.threads,
              "compute_dtype": compute_dtype(config), "pyramid_min_level": config.PYRAMID_MIN_LEVEL}

    anchors = get_anchors_pixels(config, config.IMAGE_SHAPE)
    input_s = timed(lambda: build_training_sample(data, config, 0, anchors), args.steps)
    result["input_sample_s"] = round(input_s, 3)

    modes = [] if args.inference_only else [("train forward", False),
                                            ("train forward+backward", True)]
    for mode, backward in modes:
        rows = [(name, timed(prefix_timer(model.keras_model, names, batch, backward), args.steps))
                for name, names in cumulative(train_stages(config))]
        if backward:
            train_step, _ = model._make_steps(model.make_optimizer(0.001))
            rows.append(("losses, L2, clipping, SGD update (real train_step)", timed(
                lambda: [t.numpy() for t in tf.nest.flatten(train_step(batch))], args.steps)))
        print(table(f"{mode}, {args.config}, {args.size}x{args.size}, {args.threads} threads",
                    rows))
        result[mode] = {name: round(t, 3) for name, t in rows}

    del model
    infer = modellib.MaskRCNN("inference", config, "/tmp/bench_logs")
    image = data.load_image(0)
    molded, metas, _ = infer.mold_inputs([image])
    anchors = infer.get_anchors(molded[0].shape)[None]
    inputs = (tf.constant(molded, tf.float32), tf.constant(metas, tf.float32),
              tf.constant(anchors, tf.float32))
    rows = [(name, timed(prefix_timer(infer.keras_model, names, inputs, False), args.steps))
            for name, names in cumulative(infer_stages(config))]
    rows.append(("mold, unmold, masks to image size (real detect())",
                 timed(lambda: infer.detect([image]), args.steps)))
    print(table(f"inference, {args.config}, {args.size}x{args.size}, {args.threads} threads", rows))
    result["inference"] = {name: round(t, 3) for name, t in rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
