"""A tiny in-memory dataset of coloured shapes for engine tests (no files).

Each image is [size, size, 3] uint8 on a grey, noisy background and holds 1-3 shapes of three
classes: 1 square, 2 circle, 3 triangle. load_mask returns bool [size, size, N] and int32 [N].
"""
import numpy as np
from skimage.draw import disk, polygon

from mrcnn import utils

CLASSES = ["square", "circle", "triangle"]


def draw_shape(shape, cls, cy, cx, r):
    """Boolean mask [H, W] of one shape of class `cls` (1..3) centred at (cy, cx), radius r."""
    mask = np.zeros(shape, bool)
    if cls == 1:
        mask[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = True
    elif cls == 2:
        mask[disk((cy, cx), r, shape=shape)] = True
    else:
        rr, cc = polygon([cy - r, cy + r, cy + r], [cx, cx - r, cx + r], shape=shape)
        mask[rr, cc] = True
    return mask


class ShapesDataset(utils.Dataset):
    """`count` random images of `size` pixels, reproducible from `seed`."""

    def __init__(self, count, size=128, seed=0, max_shapes=3):
        super().__init__()
        for i, name in enumerate(CLASSES, start=1):
            self.add_class("shapes", i, name)
        rng = np.random.default_rng(seed)
        for i in range(count):
            n = int(rng.integers(1, max_shapes + 1))
            specs = []
            for _ in range(n):
                r = int(rng.integers(size // 10, size // 5))
                specs.append((int(rng.integers(1, 4)), int(rng.integers(r, size - r)),
                              int(rng.integers(r, size - r)), r,
                              rng.integers(40, 255, 3).astype(np.uint8)))
            self.add_image("shapes", i, None, size=size, shapes=specs,
                           noise_seed=int(rng.integers(1 << 31)))
        self.prepare()

    def load_image(self, image_id):
        info = self.image_info[image_id]
        size = info["size"]
        rng = np.random.default_rng(info["noise_seed"])
        image = np.full((size, size, 3), 110, np.int16) + rng.integers(-12, 12, (size, size, 3))
        for cls, cy, cx, r, colour in info["shapes"]:
            image[draw_shape((size, size), cls, cy, cx, r)] = colour
        return np.clip(image, 0, 255).astype(np.uint8)

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        size = info["size"]
        masks, ids = [], []
        occluded = np.zeros((size, size), bool)
        for cls, cy, cx, r, _ in reversed(info["shapes"]):
            m = draw_shape((size, size), cls, cy, cx, r) & ~occluded
            occluded |= m
            masks.append(m)
            ids.append(cls)
        return np.stack(masks[::-1], axis=-1).astype(np.uint8), np.array(ids[::-1])
