"""Procedural synthetic blood smears: images of white blood cells with exact masks.

Used by ``python3 WBC.py synth``, by the demo and by the tests, so that the product can be
tried and tested without downloading real data.

A picture is built in optical density (absorbance), as light passing a stained smear is:
every object adds its own density times its stain colour, overlapping red cells darken
each other, and the camera sees ``illumination * exp(-density)``, then mild blur and noise.
White cells are drawn over the red cells (they hide what lies below them). The look follows
Wright/Giemsa stained peripheral blood:

- Neutrophil: 3-5 lobes joined by thin strands, pale pink-lilac finely granular cytoplasm.
- Eosinophil: two-lobed ("spectacle") nucleus, cytoplasm packed with orange-red granules.
- Basophil: lobed nucleus mostly hidden by coarse purple-black granules over the whole cell.
- Lymphocyte: small cell, round dense nucleus filling most of it, thin sky-blue rim.
- Monocyte: largest cell, kidney-shaped or folded nucleus with lacy chromatin, abundant
  grey-blue cytoplasm, sometimes with vacuoles.

The mask follows the real data set (wbc-zheng2018): 0 background (red cells included),
128 cytoplasm, 255 nucleus; each white cell is one connected component, white cells never
touch each other.

Public API: ``CLASSES``, ``draw_smear(rng, size, cell_class, n_cells)``,
``crop_single_cell(rng, image, mask, fill)`` and
``generate(out_dir, images, size, seed, val_fraction, progress, single_cells)``.
"""
import math
import os
import struct
import sys
import time
import zlib

import numpy as np
from PIL import Image
from scipy import ndimage

from mrcnn.durable import creating
from wbc.errors import UserError

CLASSES = ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]

__all__ = ["CLASSES", "crop_single_cell", "draw_smear", "generate"]

MIN_SIZE = 64
F32 = np.float32

# Colours are quoted as the RGB a stain gives at unit density on this reference background;
# they are turned into optical densities per channel (negative densities clipped to 0).
_BG_REF = np.array([230.0, 195.0, 185.0])

_TARGETS = {
    "rbc": (208, 134, 140),
    "platelet": (140, 85, 165),
    "platelet_halo": (205, 175, 200),
    # Nuclei
    "nuc_dense": (82, 36, 124),        # lymphocyte, neutrophil
    "nuc_eos": (98, 50, 138),
    "nuc_baso": (110, 62, 145),
    "nuc_mono": (112, 66, 150),
    # Cytoplasm
    "cyto_neut": (206, 168, 182),      # pale pink-lilac
    "gran_neut": (196, 150, 178),      # fine lilac dust
    "cyto_eos": (212, 168, 165),
    "gran_eos": (214, 98, 76),         # orange-red
    "cyto_baso": (190, 150, 188),
    "gran_baso": (48, 22, 78),         # purple-black
    "cyto_lymph": (150, 158, 196),     # sky blue (against a pink background)
    "cyto_mono": (172, 166, 192),      # grey-blue
}


def _od(rgb):
    return np.maximum(np.log(_BG_REF / np.asarray(rgb, dtype=float)), 0.0)


_OD = {name: _od(rgb) for name, rgb in _TARGETS.items()}

# Backgrounds: pinkish (CellaVision-like) to cream/yellow (rapid stain, Tecom-like).
_BG_PINK = np.array([233.0, 199.0, 189.0])
_BG_CREAM = np.array([247.0, 238.0, 206.0])

# White-cell diameter in red-cell diameters, per class (low, high).
_DIAMETER = {
    "Basophil": (1.55, 1.8),
    "Eosinophil": (1.75, 2.0),
    "Lymphocyte": (1.45, 1.62),
    "Monocyte": (1.95, 2.2),
    "Neutrophil": (1.7, 1.95),
}

# Outline irregularity (relative amplitude of the Fourier terms of the radius).
_WOBBLE = {"Basophil": 0.035, "Eosinophil": 0.025, "Lymphocyte": 0.02,
           "Monocyte": 0.055, "Neutrophil": 0.025}


# ----------------------------------------------------------------------------- helpers


def _stain(rng):
    """Per-image stain: hue rotation about the grey axis, saturation and strength jitter."""
    angle = rng.normal(0.0, 0.10)                  # radians, about the grey axis
    sat = rng.uniform(0.85, 1.15)
    strength = rng.uniform(0.85, 1.12)
    axis = np.ones(3) / math.sqrt(3.0)
    c, s = math.cos(angle), math.sin(angle)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = c * np.eye(3) + s * cross + (1 - c) * np.outer(axis, axis)
    out = {}
    for name, vec in _OD.items():
        grey = vec.mean()
        v = grey + sat * (vec - grey)
        v = rot @ v
        out[name] = (np.maximum(v, 0.0) * strength).astype(F32)
    return out


def _wobble_terms(rng, amp, kmax=5):
    """Random Fourier terms (k, amplitude, phase) for a wobbly radius."""
    ks = np.arange(2, kmax + 1)
    amps = rng.normal(0.0, amp, size=ks.size) / np.sqrt(ks - 1)
    phases = rng.uniform(0.0, 2 * np.pi, size=ks.size)
    return list(zip(ks.tolist(), amps.tolist(), phases.tolist()))


def _wobble(theta, terms):
    w = 1.0
    for k, a, p in terms:
        w = w + a * np.cos(k * theta + p)
    return w


def _noise(rng, shape, sigma):
    """Smooth Gaussian noise of unit standard deviation."""
    n = rng.standard_normal(shape, dtype=F32)
    if sigma > 0.3:
        n = ndimage.gaussian_filter(n, sigma, mode="reflect", truncate=3.0)
    sd = float(n.std())
    return n / sd if sd > 0 else n


def _granules(rng, weight, count, sigma, gain):
    """Discrete round granules: random points (kept with probability ``weight``) blurred
    into blobs of about 2.5 sigma across, saturating where they overlap."""
    shape = weight.shape
    idx = rng.integers(0, weight.size, int(count))
    idx = idx[rng.random(idx.size, dtype=F32) < weight.ravel()[idx]]
    field = np.bincount(idx, minlength=weight.size).reshape(shape).astype(F32)
    sigma = max(float(sigma), 0.5)
    field = ndimage.gaussian_filter(field, sigma, mode="constant", truncate=2.5)
    field *= F32(2 * np.pi * sigma * sigma * gain)
    return 1.0 - np.exp(-field)


def _ellipse_sd(u, v, cx, cy, a, b, ang, terms=None):
    """Approximate signed distance (px, positive inside) to a (wobbly) ellipse."""
    c, s = math.cos(ang), math.sin(ang)
    x = u - cx
    y = v - cy
    xr = x * c + y * s
    yr = y * c - x * s
    q = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    if terms:
        q = q / _wobble(np.arctan2(yr / b, xr / a), terms)
    return (1.0 - q) * min(a, b)


def _circle_sd(u, v, cx, cy, r):
    return r - np.sqrt((u - cx) ** 2 + (v - cy) ** 2)


def _capsule_sd(u, v, p0, p1, w):
    """Signed distance to a segment p0-p1 thickened to half-width w."""
    ax, ay = p0
    bx, by = p1
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    px = u - ax
    py = v - ay
    t = np.clip((px * dx + py * dy) / max(ll, 1e-6), 0.0, 1.0)
    return w - np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2)


def _alpha(sd):
    return np.clip(sd + 0.5, 0.0, 1.0)


# ----------------------------------------------------------------------------- red cells


def _rbc_sprites(rng, diameter, count=8):
    r0 = diameter / 2.0
    h = int(math.ceil(r0 * 1.2)) + 2
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1].astype(F32)
    rho0 = np.sqrt(xx * xx + yy * yy)
    th0 = np.arctan2(yy, xx)
    sprites = []
    for _ in range(count):
        r = r0 * rng.uniform(0.9, 1.08)
        terms = [(2, rng.normal(0, 0.04), rng.uniform(0, 2 * np.pi)),
                 (3, rng.normal(0, 0.015), rng.uniform(0, 2 * np.pi))]
        rr = r * _wobble(th0, terms)
        t = rho0 / rr
        edge = _alpha(rr - rho0)
        pallor = rng.uniform(0.1, 0.4)             # density at the centre (1 = rim)
        pr = rng.uniform(0.42, 0.55)               # radius of the central pallor
        body = 1.0 - (1.0 - pallor) * np.exp(-(t / pr) ** 4)
        rim = rng.uniform(0.15, 0.35) * np.exp(-((t - 0.9) / 0.1) ** 2)
        sprites.append((edge * (body + rim) * rng.uniform(0.85, 1.1)).astype(F32))
    return sprites, h


def _rbc_layer(rng, size, diameter, wbcs):
    """Density map of a monolayer of red cells: a jittered, rotated hexagonal packing."""
    sprites, h = _rbc_sprites(rng, diameter)
    spacing = diameter * rng.uniform(0.98, 1.22)
    keep = rng.uniform(0.6, 0.95)
    half = size * 0.75 + spacing
    ny = int(2 * half / (spacing * 0.866)) + 1
    nx = int(2 * half / spacing) + 1
    gy, gx = np.mgrid[0:ny, 0:nx].astype(F32)
    px = gx * spacing + (gy % 2) * spacing / 2 - half
    py = gy * spacing * 0.866 - half
    ang = rng.uniform(0, np.pi)
    c, s = math.cos(ang), math.sin(ang)
    x = (px * c - py * s).ravel() + size / 2
    y = (px * s + py * c).ravel() + size / 2
    x += rng.normal(0, 0.16 * spacing, x.size)
    y += rng.normal(0, 0.16 * spacing, y.size)
    x = np.rint(x)
    y = np.rint(y)
    ok = (x >= -h) & (x < size + h) & (y >= -h) & (y < size + h)
    ok &= rng.random(x.size) < keep
    for cell in wbcs:           # red cells fully under a white cell are never seen
        ok &= (x - cell["cx"]) ** 2 + (y - cell["cy"]) ** 2 > (0.7 * cell["R"]) ** 2
    x, y = x[ok], y[ok]
    pick = rng.integers(0, len(sprites), x.size)
    pad = 2 * h
    dens = np.zeros((size + 2 * pad, size + 2 * pad), F32)
    n = 2 * h + 1
    for xi, yi, k in zip(x.astype(int).tolist(), y.astype(int).tolist(),
                         pick.tolist()):
        dens[yi + h:yi + h + n, xi + h:xi + h + n] += sprites[k]
    dens = dens[pad:pad + size, pad:pad + size]
    return dens / (1.0 + 0.3 * dens)             # overlaps darken, but less than twice


# ----------------------------------------------------------------------------- white cells


def _place_wbcs(rng, size, diameter, cell_class, n_cells):
    lo, hi = _DIAMETER[cell_class]
    gap = max(6.0, 0.3 * diameter)
    cells = []
    for _ in range(n_cells):
        for attempt in range(400):
            shrink = 1.0 if attempt < 200 else 0.8
            R = diameter / 2.0 * rng.uniform(lo, hi) * shrink
            terms = _wobble_terms(rng, _WOBBLE[cell_class])
            rmax = R * (1.0 + sum(abs(a) for _, a, _ in terms))
            margin = rmax + 2.0
            if 2 * margin >= size:
                continue
            cx = rng.uniform(margin, size - margin)
            cy = rng.uniform(margin, size - margin)
            if all((cx - o["cx"]) ** 2 + (cy - o["cy"]) ** 2 > (rmax + o["rmax"] + gap) ** 2
                   for o in cells):
                cells.append({"cx": float(cx), "cy": float(cy), "R": float(R),
                              "rmax": float(rmax), "terms": terms,
                              "rot": float(rng.uniform(0, 2 * np.pi))})
                break
        else:
            raise RuntimeError("could not place %d white cells in %d px" % (n_cells, size))
    return cells


def _nucleus_neutrophil(rng, u, v, R):
    """3-5 lobes along a random C/S/Z-shaped path, joined by thin strands."""
    k = int(rng.integers(3, 6))
    a = R * rng.uniform(0.26, 0.31, k) * {3: 1.12, 4: 1.0, 5: 0.9}[k]
    heading = rng.uniform(0, 2 * np.pi)
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.4)
    pts = [(0.0, 0.0)]
    for i in range(1, k):
        if i > 1 and rng.random() < 0.2:
            turn = -0.7 * turn                              # S or Z instead of C
        heading += turn + rng.normal(0, 0.25)
        step = (a[i - 1] + a[i]) * rng.uniform(0.95, 1.2)
        pts.append((pts[-1][0] + step * math.cos(heading), pts[-1][1] + step * math.sin(heading)))
    pts = np.array(pts)
    pts -= pts.mean(axis=0)
    reach = float(np.max(np.hypot(pts[:, 0], pts[:, 1]) + a))
    if reach > 0.84 * R:                                    # keep the nucleus inside the cell
        pts *= (0.84 * R - a.max()) / max(reach - a.max(), 1e-6)
    sd = None
    for i in range(k):
        lobe = _ellipse_sd(u, v, pts[i, 0], pts[i, 1], a[i], a[i] * rng.uniform(0.65, 0.9),
                           rng.uniform(0, np.pi), _wobble_terms(rng, 0.06, 4))
        sd = lobe if sd is None else np.maximum(sd, lobe)
        if i:
            w = max(1.0, R * rng.uniform(0.035, 0.07))
            sd = np.maximum(sd, _capsule_sd(u, v, tuple(pts[i - 1]), tuple(pts[i]), w))
    return sd


def _nucleus_eosinophil(rng, u, v, R):
    d = R * rng.uniform(0.33, 0.42)
    off = R * rng.uniform(0.0, 0.12)
    sd = None
    centres = []
    for sgn in (-1.0, 1.0):
        a = R * rng.uniform(0.33, 0.4)
        b = a * rng.uniform(0.72, 0.9)
        cx, cy = sgn * d, off + rng.normal(0, 0.03 * R)
        centres.append((cx, cy))
        lobe = _ellipse_sd(u, v, cx, cy, a, b, np.pi / 2 + rng.normal(0, 0.3) + sgn * 0.3,
                           _wobble_terms(rng, 0.04, 4))
        sd = lobe if sd is None else np.maximum(sd, lobe)
    w = R * rng.uniform(0.05, 0.09)
    return np.maximum(sd, _capsule_sd(u, v, centres[0], centres[1], w))


def _nucleus_basophil(rng, u, v, R):
    k = int(rng.integers(2, 4))
    ang = rng.uniform(0, 2 * np.pi) + np.arange(k) * 2 * np.pi / k + rng.normal(0, 0.3, k)
    dist = R * rng.uniform(0.15, 0.3, k)
    sd = None
    prev = None
    for i in range(k):
        cx, cy = dist[i] * math.cos(ang[i]), dist[i] * math.sin(ang[i])
        a = R * rng.uniform(0.38, 0.48)
        lobe = _ellipse_sd(u, v, cx, cy, a, a * rng.uniform(0.72, 0.9), rng.uniform(0, np.pi),
                           _wobble_terms(rng, 0.05, 4))
        sd = lobe if sd is None else np.maximum(sd, lobe)
        if prev is not None:
            sd = np.maximum(sd, _capsule_sd(u, v, prev, (cx, cy), R * 0.12))
        prev = (cx, cy)
    return sd


def _nucleus_lymphocyte(rng, u, v, R):
    a = R * rng.uniform(0.78, 0.9)
    b = a * rng.uniform(0.86, 1.0)
    oa = rng.uniform(0, 2 * np.pi)
    off = R * rng.uniform(0.0, 0.12)
    cx, cy = off * math.cos(oa), off * math.sin(oa)
    sd = _ellipse_sd(u, v, cx, cy, a, b, rng.uniform(0, np.pi), _wobble_terms(rng, 0.03, 4))
    if rng.random() < 0.3:                          # small indentation
        na = rng.uniform(0, 2 * np.pi)
        r = R * rng.uniform(0.12, 0.2)
        sd = np.minimum(sd, -_circle_sd(u, v, cx + a * math.cos(na), cy + b * math.sin(na), r))
    return sd


def _nucleus_monocyte(rng, u, v, R):
    a = R * rng.uniform(0.66, 0.78)
    b = a * rng.uniform(0.72, 0.88)
    ang = rng.uniform(0, 2 * np.pi)
    off = R * rng.uniform(0.08, 0.2)
    cx, cy = off * math.cos(ang), off * math.sin(ang)
    rot = ang + np.pi / 2 + rng.normal(0, 0.3)     # long axis across the offset direction
    sd = _ellipse_sd(u, v, cx, cy, a, b, rot, _wobble_terms(rng, 0.06, 5))
    crease = None
    if rng.random() < 0.65:
        # kidney / horseshoe: a notch on the side facing the centre of the cell
        r = R * rng.uniform(0.2, 0.32)
        depth = b * rng.uniform(0.85, 1.15)
        nx = cx - depth * math.cos(ang)
        ny = cy - depth * math.sin(ang)
        sd = np.minimum(sd, -_circle_sd(u, v, nx, ny, r))
    else:
        # folded: a second lobe overlapping the first, with a crease along the join
        a2 = a * rng.uniform(0.6, 0.8)
        c2x = cx + a * 0.55 * math.cos(rot) - 0.25 * b * math.cos(ang)
        c2y = cy + a * 0.55 * math.sin(rot) - 0.25 * b * math.sin(ang)
        sd = np.maximum(sd, _ellipse_sd(u, v, c2x, c2y, a2, a2 * rng.uniform(0.7, 0.9),
                                        rot + rng.normal(0.6, 0.3)))
        crease = ((cx, cy), (c2x, c2y))
    return sd, crease


def _draw_wbc(rng, od, mask, cell, cell_class, stain, px_scale, blur):
    """Draw one white cell over the optical-density image (channels first) and write its mask."""
    size = od.shape[1]
    cx, cy, R = cell["cx"], cell["cy"], cell["R"]
    ext = cell["rmax"] + 3.0
    y0, y1 = max(0, int(cy - ext)), min(size, int(math.ceil(cy + ext)) + 1)
    x0, x1 = max(0, int(cx - ext)), min(size, int(math.ceil(cx + ext)) + 1)
    dy = (np.arange(y0, y1, dtype=F32) - F32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=F32) - F32(cx))[None, :]
    c, s = math.cos(cell["rot"]), math.sin(cell["rot"])
    u = dx * F32(c) + dy * F32(s)
    v = dy * F32(c) - dx * F32(s)
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    cell_sd = R * _wobble(theta, cell["terms"]) - rho
    cell_a = _alpha(cell_sd)
    shape = cell_sd.shape

    g = lambda sigma: _noise(rng, shape, sigma * px_scale)  # noqa: E731
    crease = None
    if cell_class == "Neutrophil":
        nuc_sd = _nucleus_neutrophil(rng, u, v, R)
        rim = max(1.5, 0.08 * R)
    elif cell_class == "Eosinophil":
        nuc_sd = _nucleus_eosinophil(rng, u, v, R)
        rim = max(1.5, 0.08 * R)
    elif cell_class == "Basophil":
        nuc_sd = _nucleus_basophil(rng, u, v, R)
        rim = max(1.5, 0.1 * R)
    elif cell_class == "Lymphocyte":
        nuc_sd = _nucleus_lymphocyte(rng, u, v, R)
        rim = max(1.5, R * rng.uniform(0.06, 0.13))
    else:
        nuc_sd, crease = _nucleus_monocyte(rng, u, v, R)
        rim = max(1.5, 0.1 * R)
    nuc_sd = np.minimum(nuc_sd, cell_sd - rim)
    nuc_a = _alpha(nuc_sd)
    membrane = np.exp(-0.5 * (cell_sd / max(0.8, 0.9 * px_scale)) ** 2)
    nuc_edge = np.exp(-np.maximum(nuc_sd, 0.0) / max(1.0, 1.6 * px_scale)) * nuc_a

    # Per-class densities: cytoplasm, granules, nucleus (2-D maps) and their colours.
    gran_vec = None
    area = np.pi * R * R

    def granules(weight, coverage, sigma, gain):
        sig = max(0.5, sigma * px_scale)
        return _granules(rng, weight, coverage * area / (5.0 * sig * sig), sig, gain)

    if cell_class == "Neutrophil":
        cyto = 0.95 + 0.1 * g(0.7) + 0.45 * membrane
        gran = granules(cell_a, 1.2, 0.6, 0.5) * rng.uniform(0.6, 1.0)
        gran_vec = stain["gran_neut"]
        cyto_vec = stain["cyto_neut"]
        chrom = g(1.6)
        nuc = 0.95 + 0.2 * chrom + 0.25 * nuc_edge
        nuc_vec = stain["nuc_dense"]
    elif cell_class == "Eosinophil":
        cyto = 0.8 + 0.4 * membrane
        gran = granules(cell_a * (1.0 - 0.9 * nuc_a), rng.uniform(1.3, 1.8), 1.25, 1.3)
        gran = gran * rng.uniform(0.9, 1.2)
        gran_vec = stain["gran_eos"]
        cyto_vec = stain["cyto_eos"]
        nuc = 0.85 + 0.18 * g(1.5) + 0.25 * nuc_edge
        nuc_vec = stain["nuc_eos"]
    elif cell_class == "Basophil":
        cyto = 0.9 + 0.3 * membrane
        weight = cell_a * np.clip(0.75 + 0.25 * g(3.0), 0.2, 1.0)
        gran = (granules(weight, rng.uniform(0.6, 0.9), 1.7, 1.2)
                + 0.8 * granules(weight, rng.uniform(0.4, 0.7), 1.0, 1.2))
        gran = np.minimum(gran, 1.3) * rng.uniform(0.8, 1.05)
        gran_vec = stain["gran_baso"]
        cyto_vec = stain["cyto_baso"]
        nuc = 0.85 + 0.1 * g(2.0)
        nuc_vec = stain["nuc_baso"]
    elif cell_class == "Lymphocyte":
        periphery = np.exp(-np.maximum(cell_sd, 0.0) / max(1.5, 0.12 * R))
        cyto = 0.75 + 0.6 * periphery + 0.1 * g(1.0)
        cyto_vec = stain["cyto_lymph"]
        chrom = g(1.9)
        nuc = 1.02 + 0.22 * chrom + 0.2 * nuc_edge
        nuc_vec = stain["nuc_dense"]
        gran = None
    else:
        cyto = 0.95 + 0.1 * g(0.8) + 0.35 * membrane
        # vacuoles: small clear round holes in the cytoplasm
        for _ in range(int(rng.integers(0, 6))):
            r = R * rng.uniform(0.04, 0.09)
            for _try in range(12):
                a = rng.uniform(0, 2 * np.pi)
                d = R * rng.uniform(0.3, 0.85)
                vx, vy = d * math.cos(a), d * math.sin(a)
                iy = int(round(cy + vx * s + vy * c)) - y0
                ix = int(round(cx + vx * c - vy * s)) - x0
                if (0 <= iy < shape[0] and 0 <= ix < shape[1]
                        and cell_sd[iy, ix] > r + 2 and nuc_sd[iy, ix] < -r - 1):
                    hole = _alpha(_circle_sd(u, v, vx, vy, r))
                    cyto = cyto * (1.0 - 0.75 * hole) + 0.25 * np.exp(
                        -0.5 * ((_circle_sd(u, v, vx, vy, r)) / 0.8) ** 2)
                    break
        cyto_vec = stain["cyto_mono"]
        lace = g(1.0)
        ridges = np.exp(-(lace / 0.45) ** 2)               # network along zero crossings
        nuc = 0.55 + 0.45 * ridges + 0.1 * g(2.5) + 0.2 * nuc_edge
        if crease is not None:
            line = _capsule_sd(u, v, crease[0], crease[1], 1.0)
            nuc = nuc + 0.3 * np.exp(-0.5 * (np.minimum(line, 0.0) / 1.2) ** 2) * (line > -4)
        nuc_vec = stain["nuc_mono"]
        gran = None

    cyto = blur(np.maximum(cyto, 0.0) * cell_a * F32(rng.uniform(0.85, 1.15)))
    nuc = blur(np.maximum(nuc, 0.0) * nuc_a * F32(rng.uniform(0.9, 1.1)))
    patch = od[:, y0:y1, x0:x1]
    patch *= 1.0 - blur(cell_a)                  # the white cell covers the red cells
    patch += cyto * cyto_vec[:, None, None]
    patch += nuc * nuc_vec[:, None, None]
    if gran is not None:
        patch += blur(gran * cell_a) * gran_vec[:, None, None]

    m = mask[y0:y1, x0:x1]
    m[cell_sd > 0] = 128
    m[nuc_sd > 0] = 255


# ----------------------------------------------------------------------------- platelets


def _draw_platelets(rng, od, diameter, wbcs, stain, blur):
    size = od.shape[1]
    n = int(rng.poisson(6.0 * (size / 512.0) ** 2)) + int(rng.integers(0, 3))
    for _ in range(n):
        r = diameter * rng.uniform(0.06, 0.1)
        x = rng.uniform(0, size)
        y = rng.uniform(0, size)
        if any((x - w["cx"]) ** 2 + (y - w["cy"]) ** 2 < (w["rmax"] + 3 * r + 4) ** 2
               for w in wbcs):
            continue
        ext = 2 * r + 2
        y0, y1 = max(0, int(y - ext)), min(size, int(y + ext) + 2)
        x0, x1 = max(0, int(x - ext)), min(size, int(x + ext) + 2)
        if y1 <= y0 or x1 <= x0:
            continue
        dy = (np.arange(y0, y1, dtype=F32) - F32(y))[:, None]
        dx = (np.arange(x0, x1, dtype=F32) - F32(x))[None, :]
        sd = _ellipse_sd(dx, dy, 0.0, 0.0, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi),
                         _wobble_terms(rng, 0.12, 4))
        halo = blur(_alpha(sd + 0.5 * r) * 0.6)
        core = blur(_alpha(sd - 0.2 * r) * (0.7 + 0.5 * rng.random(sd.shape, dtype=F32)))
        od[:, y0:y1, x0:x1] += halo * stain["platelet_halo"][:, None, None]
        od[:, y0:y1, x0:x1] += core * stain["platelet"][:, None, None]


# ----------------------------------------------------------------------------- smear


def draw_smear(rng, size, cell_class, n_cells):
    """Draw one synthetic blood smear.

    rng: a numpy ``Generator`` (all randomness comes from it: same state, same picture).
    size: side in pixels (>= 64). cell_class: one of CLASSES. n_cells: 1-3 white cells,
    all of that class, not touching each other.
    Returns (image uint8 [size, size, 3] RGB, mask uint8 [size, size]) with mask values
    0 background (red cells and platelets included), 128 cytoplasm, 255 nucleus.
    """
    size = int(size)
    if size < MIN_SIZE:
        raise ValueError("size must be at least %d, got %d" % (MIN_SIZE, size))
    if cell_class not in CLASSES:
        raise ValueError("unknown class %r; expected one of %s" % (cell_class, ", ".join(CLASSES)))
    n_cells = int(n_cells)
    if not 1 <= n_cells <= 3:
        raise ValueError("n_cells must be 1, 2 or 3, got %d" % n_cells)

    px_scale = size / 512.0
    diameter = size / 12.0 * rng.uniform(0.92, 1.08)
    stain = _stain(rng)
    wbcs = _place_wbcs(rng, size, diameter, cell_class, n_cells)

    # Focus: a mild Gaussian blur, applied to the densities (red-cell layer and each patch).
    sigma = rng.uniform(0.0, 1.1) * max(px_scale, 0.5)
    if sigma > 0.3:
        def blur(x):
            return ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=2.5)
    else:
        def blur(x):
            return x

    rbc = blur(_rbc_layer(rng, size, diameter, wbcs))
    od = np.empty((3, size, size), F32)                 # optical density, channels first
    for ch in range(3):
        np.multiply(rbc, stain["rbc"][ch], out=od[ch])
    _draw_platelets(rng, od, diameter, wbcs, stain, blur)
    mask = np.zeros((size, size), np.uint8)
    for cell in wbcs:
        _draw_wbc(rng, od, mask, cell, cell_class, stain, px_scale, blur)

    # Illumination: background tint, brightness, a gradient, vignetting, uneven plasma,
    # and camera noise (luminance, not blurred).
    t = rng.uniform(0.0, 1.0) ** 1.5
    bg = (_BG_PINK * (1 - t) + _BG_CREAM * t) * rng.uniform(0.93, 1.04)
    bg = bg + rng.normal(0, 3.0, 3)
    lin = np.linspace(-0.5, 0.5, size, dtype=F32)
    gy, gx = (float(g) for g in rng.normal(0, 0.05, 2))
    vig = float(rng.uniform(0.0, 0.12))
    low = _noise(rng, (8, 8), 0.0)
    low = np.asarray(Image.fromarray(low.astype(F32)).resize((size, size), Image.BICUBIC))
    illum = (1.0 + gy * lin - vig * lin * lin)[:, None] + (gx * lin - vig * lin * lin)[None, :]
    illum += F32(0.012) * low
    amp = rng.uniform(0.8, 2.2) / 200.0 * math.sqrt(12.0)   # uniform noise, sd 0.8-2.2 levels
    noise = rng.random((size, size), dtype=F32)
    noise -= F32(0.5)
    noise *= F32(amp)
    illum += noise
    for ch in range(3):
        c = od[ch]
        np.subtract(F32(math.log(max(bg[ch], 1.0))), c, out=c)
        np.exp(c, out=c)
        c *= illum
    np.clip(od, 0, 255, out=od)
    return od.transpose(1, 2, 0).astype(np.uint8), mask


# ----------------------------------------------------------------------------- data set


def _plan(images, seed, val_fraction):
    """[(index, stem, class, subset)]: balanced classes, stratified split, all seeded."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    order = [CLASSES[i] for i in rng.permutation(len(CLASSES))]
    classes = [order[i % len(order)] for i in range(images)]
    by_class = {c: [i for i in range(images) if classes[i] == c] for c in order}
    quota = {c: len(by_class[c]) * val_fraction for c in order}
    n_val = {c: int(math.floor(quota[c])) for c in order}
    total = int(round(images * val_fraction))
    cap = {c: (len(by_class[c]) - 1 if images >= 5 else len(by_class[c])) for c in order}
    n_val = {c: min(n_val[c], max(cap[c], 0)) for c in order}
    # largest remainder, ties broken by the shuffled class order
    for c in sorted(order, key=lambda c: -(quota[c] - math.floor(quota[c]))):
        if sum(n_val.values()) >= total:
            break
        if n_val[c] < cap[c]:
            n_val[c] += 1
    subset = ["train"] * images
    for c in order:
        idx = by_class[c]
        for j in rng.permutation(len(idx))[:n_val[c]].tolist():
            subset[idx[j]] = "val"
    width = max(5, len(str(images - 1)))
    return [(i, "synth_%0*d" % (width, i), classes[i], subset[i]) for i in range(images)]


def _paths(out_dir, stem, cls, subset):
    return (os.path.join(out_dir, subset, "image", cls, stem + ".png"),
            os.path.join(out_dir, subset, "mask", cls, stem + ".png"))


def _check_out_dir(out_dir, plan):
    """Refuse (UserError) before writing anything if a file would be overwritten."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError("%s: exists and is not a folder; choose a new output folder" % out_dir)
    folders = set()
    for _, _, cls, subset in plan:
        for kind in ("image", "mask"):
            folders.update([os.path.join(out_dir, subset), os.path.join(out_dir, subset, kind),
                            os.path.join(out_dir, subset, kind, cls)])
    for folder in sorted(folders):
        if os.path.lexists(folder) and not os.path.isdir(folder):
            raise UserError("%s: exists and is not a folder; choose a new or empty output "
                            "folder" % folder)
    clash = [p for item in plan for p in _paths(out_dir, item[1], item[2], item[3])
             if os.path.lexists(p)]
    if clash:
        raise UserError("%s: %d of the files to write already exist (first: %s); refusing to "
                        "overwrite, choose a new or empty output folder"
                        % (out_dir, len(clash), clash[0]))


def _png_bytes(array):
    """Encode an 8-bit grey (H, W) or RGB (H, W, 3) array as PNG.

    Same format Pillow writes, but faster for noisy pictures: every row uses the "Up" filter
    (a numpy subtraction) and zlib's Huffman-only strategy, instead of Pillow's per-row
    adaptive filter choice. Deterministic: the same array gives the same bytes."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    h, w = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(h, w * channels)
    filtered = np.empty((h, w * channels + 1), np.uint8)
    filtered[:, 0] = 2                                   # filter type Up
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    data = packer.compress(filtered.tobytes()) + packer.flush()

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    colour = {1: 0, 3: 2}[channels]                      # grey or RGB, 8 bits per sample
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def _save_png(array, path):
    """Write a PNG whole (mrcnn.durable.creating), never replacing an existing file."""
    try:
        with creating(path, "wb") as f:
            f.write(_png_bytes(array))
    except FileExistsError:
        raise UserError("%s: appeared while writing; refusing to overwrite it" % path) from None


# Single-cell crops: the white cell's larger side over the crop's side, as in wbc-zheng2018
# (its cells fill 54-63% of the image side at the median).
CELL_FILL = (0.5, 0.72)
# Single-cell crops are cut from smears of size x these factors: at size 512 the cells measure
# about 60-240 px (59-236 px measured on 100 images).
CROP_SMEAR_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)


def crop_single_cell(rng, image, mask, fill=CELL_FILL):
    """A square crop of a one-cell smear that holds the whole cell, which fills a random
    fraction in `fill` of the crop's side, at a random place.

    image uint8 [S, S, 3], mask uint8 [S, S] (one white cell) -> the same arrays cropped to
    [C, C, 3] and [C, C], C = round(cell side / fraction), at most S.
    """
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = min(int(max(y1 - y0, x1 - x0) / rng.uniform(*fill)), mask.shape[0])
    top = int(rng.integers(max(0, y1 - side), min(y0, mask.shape[0] - side) + 1))
    left = int(rng.integers(max(0, x1 - side), min(x0, mask.shape[1] - side) + 1))
    return (image[top:top + side, left:left + side], mask[top:top + side, left:left + side])


def generate(out_dir, images=100, size=512, seed=0, val_fraction=0.2, progress=True,
             single_cells=False):
    """Write a synthetic data set in the product's layout and return its counts.

    Layout: <out_dir>/<train|val>/image/<Class>/<stem>.png (RGB) and
    <out_dir>/<train|val>/mask/<Class>/<stem>.png (8-bit grey, 0/128/255), stems synth_NNNNN.
    Classes are balanced (round-robin over a seeded shuffle of CLASSES), the split is
    stratified per class. Each image is a size x size smear with 1-3 white cells or, with
    single_cells, one white cell cropped from a smear of size x CROP_SMEAR_SCALES px so that
    it fills CELL_FILL of the side (images of varying size, like single-cell data sets).
    The same arguments give byte-identical files. Never overwrites a file: refuses
    (UserError) if any file it would write exists.
    Returns {"train": {class: n}, "val": {class: n}, "seconds": t}.
    """
    t0 = time.perf_counter()
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)) or images < 1:
        raise UserError("images must be a whole number >= 1, got %r" % (images,))
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise UserError("size must be a whole number of pixels >= %d, got %r" % (MIN_SIZE, size))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError("seed must be a whole number >= 0, got %r" % (seed,))
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        raise UserError("val_fraction must be a number in [0, 1), got %r" % (val_fraction,))
    if not 0.0 <= val_fraction < 1.0:
        raise UserError("val_fraction must be in [0, 1), got %r" % (val_fraction,))
    images, size, seed = int(images), int(size), int(seed)
    out_dir = os.path.normpath(os.fspath(out_dir))

    plan = _plan(images, seed, val_fraction)
    _check_out_dir(out_dir, plan)
    counts = {sub: {c: 0 for c in CLASSES} for sub in ("train", "val")}
    for _, _, cls, subset in plan:
        for kind in ("image", "mask"):
            os.makedirs(os.path.join(out_dir, subset, kind, cls), exist_ok=True)

    from tqdm import tqdm
    for index, stem, cls, subset in tqdm(plan, desc="synth", unit="img", file=sys.stderr,
                                         disable=not progress, dynamic_ncols=True):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, index]))
        if single_cells:
            smear = int(round(size * float(rng.choice(CROP_SMEAR_SCALES))))
            img, mask = crop_single_cell(rng, *draw_smear(rng, smear, cls, 1))
        else:
            img, mask = draw_smear(rng, size, cls, int(rng.integers(1, 4)))
        img_path, mask_path = _paths(out_dir, stem, cls, subset)
        _save_png(img, img_path)
        _save_png(mask, mask_path)
        counts[subset][cls] += 1
    counts["seconds"] = time.perf_counter() - t0
    return counts
