"""Synthetic thorax-CT phantoms: the demo cohort (no public CT can be downloaded here).

Each phantom is painted from implicit shapes (ellipsoids, elliptic cylinders, tubes
along polylines) whose geometry is given in millimetres in a canonical patient frame,
so a different grid samples the same anatomy at another resolution. A random pose
(shift, per-axis scale, rotation about z) maps that frame into the scanner frame.

Arrays are RAS+ ``[X, Y, Z]`` (index grows toward Right, Anterior, Superior), like the
rest of the core. Labels follow ``labels.THORAX_LABELS``; extra RoI masks follow
``labels.PATHOLOGY_ROIS``. Painting order is the label priority: later shapes win, and
thin fat halos around organs carve them out of the lungs only.

Non-contrast scan: blood and myocardium ~40 HU, so heart, aorta and pulmonary veins are
told apart by fat planes and position, as on a real non-contrast CT. Variation: sex
(males ~9 % larger), age (bone mineral down, lung density up, aorta wider), pose and
per-organ jitter, scanner kernel (``standard``: smooth noise ~18 HU; ``sharp``: less
blur, edge enhancement, white noise ~42 HU). ``generate_cohort`` writes the demo cohort;
``save_preview`` draws the figure in ``docs/phantom.png``.
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError
from .labels import PATHOLOGY_ROIS, THORAX_LABELS

LABEL = {name: i for i, name in enumerate(THORAX_LABELS)}
KERNELS = ("standard", "sharp")

# Hounsfield units of the tissues (non-contrast scan: blood and myocardium alike).
HU = dict(air=-1000.0, fat=-95.0, med_fat=-75.0, muscle=45.0, blood=40.0, wall=30.0,
          thyroid=90.0, liver=58.0, abdomen=35.0, cartilage=130.0, csf=15.0,
          disc=85.0, fluid=15.0, breast=-40.0)


@dataclass
class Phantom:
    """One synthetic CT: HU volume, label map, pathology masks, RAS+ affine."""
    hu: np.ndarray                      # float32 [X,Y,Z] Hounsfield units
    labels: np.ndarray                  # uint8 [X,Y,Z], ids of THORAX_LABELS
    rois: dict[str, np.ndarray]         # pathology name -> bool [X,Y,Z]
    affine: np.ndarray                  # 4x4 RAS+, diagonal spacing, origin centred
    sex: str
    age: float
    kernel: str = "standard"
    seed: int = 0
    spacing: tuple[float, float, float] = (6.0, 6.0, 6.0)


# ---------------------------------------------------------------- frame and shapes

class _Frame:
    """Voxel grid plus patient pose: canonical anatomy mm <-> scanner voxels."""

    def __init__(self, shape, spacing, rot_deg, scale, shift):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, float)
        self.origin = -(np.asarray(self.shape) - 1) / 2 * self.spacing
        self.scale = np.asarray(scale, float)
        self.shift = np.asarray(shift, float)
        a = np.deg2rad(rot_deg)
        self.rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        w = np.meshgrid(*[(self.origin[i] + self.spacing[i] * np.arange(n)).astype(np.float32)
                          for i, n in enumerate(self.shape)], indexing="ij", sparse=True)
        d = [w[i] - np.float32(self.shift[i]) for i in range(3)]
        c, s = np.float32(self.rot[0, 0]), np.float32(self.rot[1, 0])
        # canonical = S^-1 R^T (world - shift); broadcast to full arrays once.
        full = np.broadcast_shapes(*(x.shape for x in w))
        self.X = np.broadcast_to((c * d[0] + s * d[1]) / np.float32(self.scale[0]), full).copy()
        self.Y = np.broadcast_to((-s * d[0] + c * d[1]) / np.float32(self.scale[1]), full).copy()
        self.Z = np.broadcast_to(d[2] / np.float32(self.scale[2]), full).copy()
        self.world = w

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag(list(self.spacing) + [1.0])
        aff[:3, 3] = self.origin
        return aff

    def box(self, lo, hi):
        """Index slices covering the canonical box [lo, hi] (None if off the grid)."""
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)
        world = self.rot @ (corners * self.scale[:, None]) + self.shift[:, None]
        idx = (world - self.origin[:, None]) / self.spacing[:, None]
        a = np.maximum(np.floor(idx.min(1)).astype(int) - 1, 0)
        b = np.minimum(np.ceil(idx.max(1)).astype(int) + 2, self.shape)
        if np.any(b <= a):
            return None
        return tuple(slice(i, j) for i, j in zip(a, b))

    def coords(self, box):
        return self.X[box], self.Y[box], self.Z[box]


def _ellipsoid(P, c, r, rot=None):
    """Approximate signed distance (mm) to an ellipsoid, optionally rotated (local = rot @ p)."""
    d = [P[i] - np.float32(c[i]) for i in range(3)]
    if rot is not None:
        d = [rot[i, 0] * d[0] + rot[i, 1] * d[1] + rot[i, 2] * d[2] for i in range(3)]
    q = np.sqrt(sum((d[i] / np.float32(r[i])) ** 2 for i in range(3)))
    return (q - 1) * np.float32(min(r))


def _polyline(P, pts, radii):
    """Signed distance (mm) to a tube of varying radius along a polyline (union of cones)."""
    pts = np.asarray(pts, np.float32)
    radii = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),))
    out = np.full(P[0].shape, np.inf, np.float32)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
        ab = b - a
        if float(ab @ ab) < 1e-6:                       # repeated point: a sphere
            ab = np.array([1e-3, 0, 0], np.float32)
        rel = [P[i] - a[i] for i in range(3)]
        t = np.clip((rel[0] * ab[0] + rel[1] * ab[1] + rel[2] * ab[2]) / float(ab @ ab), 0, 1)
        dist = np.sqrt(sum((rel[i] - t * ab[i]) ** 2 for i in range(3)))
        np.minimum(out, dist - (ra + t * (rb - ra)), out=out)
    return out


def _bounds(pts, margin):
    pts = np.asarray(pts, float)
    return pts.min(0) - margin, pts.max(0) + margin


# ---------------------------------------------------------------- the painter

class _Painter:
    """Holds the HU and label volumes; each method paints one anatomical structure."""

    def __init__(self, frame: _Frame, rng: np.random.Generator, sex: str, age: float):
        self.f, self.rng, self.sex, self.age = frame, rng, sex, age
        self.hu = np.full(frame.shape, HU["air"], np.float32)
        self.lab = np.zeros(frame.shape, np.uint8)
        self.bone_age = 1.0 - 0.0045 * (age - 20.0)       # mineral density loss with age
        # Per-structure anatomical jitter (mm), on top of the global pose.
        self.jit = {k: float(rng.normal(0, s)) for k, s in dict(
            heart_x=5, heart_y=4, heart_z=6, arch_z=6, dia_r=8, dia_l=8, fis_l=8, fis_r=8,
            fis_h=7, rib_z=5, thy_z=5, fat=3).items()}
        self.fat_mm = (19.0 if sex == "F" else 15.0) + self.jit["fat"]
        self.heart_parts = self._heart_parts()

    def paint(self, sdf_fn, lo, hi, hu=None, label=None, where=None, grow=0.0):
        """Paint voxels with sdf < grow inside the canonical box; returns (box, mask).
        ``where(P, box)`` restricts the voxels further."""
        box = self.f.box(np.asarray(lo) - grow, np.asarray(hi) + grow)
        if box is None:
            return None, None
        P = self.f.coords(box)
        m = sdf_fn(P) < grow
        if where is not None:
            m &= where(P, box)
        if hu is not None:
            self.hu[box][m] = hu(P)[m] if callable(hu) else hu
        if label is not None:
            self.lab[box][m] = label
        return box, m

    def tube(self, pts, r, hu, label=None, halo=0.0, halo_hu=HU["med_fat"]):
        """A tube with an optional fat halo (separates it from the lung)."""
        rmax = float(np.max(r))
        lo, hi = _bounds(pts, rmax)
        if halo:
            self.paint(lambda P: _polyline(P, pts, r), lo, hi, halo_hu, 0, self.in_lung, halo)
        return self.paint(lambda P: _polyline(P, pts, r), lo, hi, hu, label)

    def in_lung(self, P, box):
        """Halos of fat only carve the lungs; they never erase another organ."""
        lab = self.lab[box]
        return (lab >= LABEL["lung_upper_lobe_left"]) & (lab <= LABEL["lung_lower_lobe_right"])

    # -- geometry helpers shared by several structures --------------------------------
    @staticmethod
    def ring(z, floor=0.42):
        """Semi-axes (x, y anterior, y posterior) of the thoracic cavity at height z;
        it narrows to a dome at the apex (the rib ring keeps a ``floor`` for rib 1)."""
        t = np.clip((np.asarray(z, np.float32) - 20.0) / 95.0, 0, 1)
        f = np.maximum(np.sqrt(1 - t ** 2), floor)
        wide = 1 + 0.05 * np.clip((20 - np.asarray(z, np.float32)) / 120, 0, 1)  # wider base
        return 122.0 * f * wide, 80.0 * f, 76.0 * f

    CY = 2.0                                           # cavity centre (y, mm)

    def spine_y(self, z):
        """Vertebral-body centre y: mild thoracic kyphosis (posterior convexity)."""
        return -40.0 - 5.0 * (1 - (np.asarray(z, np.float32) / 150.0) ** 2)

    def diaphragm(self, x, y):
        """Height of the diaphragm: right dome higher (liver), posterior recesses deep."""
        r = -80 + self.jit["dia_r"] - 70 * (((x - 60) / 110) ** 2 + ((y - 5) / 95) ** 2)
        l = -92 + self.jit["dia_l"] - 70 * (((x + 60) / 110) ** 2 + ((y - 5) / 95) ** 2)
        return np.maximum(r, l)

    # -- structures, in painting order ----------------------------------------------
    def body(self):
        a, b = 165.0, 115.0

        def ell(P, ea, eb):                             # shoulders slope toward the neck
            ea = ea * (1 - 0.14 * np.clip((P[2] - 75) / 70, 0, 1) ** 2)
            return (np.sqrt((P[0] / ea) ** 2 + (P[1] / eb) ** 2) - 1) * eb
        self.paint(lambda P: ell(P, a, b), (-a, -b, -400), (a, b, 400), HU["fat"])
        if self.sex == "F":                            # breasts: fat with glandular tissue
            for sx in (-1, 1):
                c, r = (sx * 72, b - 18, -25), (50, 34, 45)
                self.paint(lambda P: _ellipsoid(P, c, r), np.subtract(c, r), np.add(c, r), HU["breast"])
        t = self.fat_mm
        self.paint(lambda P: ell(P, a - t, b - t), (-a, -b, -400), (a, b, 400), HU["muscle"])

    def cavity(self):
        """Thoracic cavity: mediastinal fat above the diaphragm, abdomen below it."""
        def sdf(P):
            A, Ba, Bp = self.ring(P[2], floor=0.05)
            B = np.where(P[1] > self.CY, Ba, Bp)
            q = np.sqrt((P[0] / A) ** 2 + ((P[1] - self.CY) / B) ** 2)
            return np.where(P[2] < 114, (q - 1) * B, 1.0)

        def hu(P):
            below = P[2] < self.diaphragm(P[0], P[1])
            return np.where(below, np.where(P[0] > -25, HU["liver"], HU["abdomen"]), HU["med_fat"])
        box, m = self.paint(sdf, (-130, -80, -400), (130, 84, 116), hu)
        self.cavity_box, self.cavity_mask = box, m
        c = (-62, 25, self.diaphragm(-62, 25) - 22)          # gastric air bubble
        self.paint(lambda P: _ellipsoid(P, c, (20, 16, 11)), np.subtract(c, 20), np.add(c, 20), HU["air"])

    def lungs(self):
        """Both lungs fill the cavity above the diaphragm; lobes split by fissure planes."""
        box, m = self.cavity_box, self.cavity_mask
        X, Y, Z = self.f.coords(box)
        medial = 9 + 30 * np.clip((Z - 60) / 50, 0, 1)     # apices stay lateral to the neck
        lung = m & (Z > self.diaphragm(X, Y)) & (np.abs(X) > medial)
        left = X < 0
        # Oblique fissure: from posterior-superior to anterior-inferior; upper lobe above.
        # It curves down anteriorly, so the anterior costophrenic lung is upper/middle lobe.
        bend = 6 * (Y / 80) ** 2 - 30 * np.clip(Y / 80, 0, 1) ** 2
        obl_l = Z - (72 + self.jit["fis_l"] - 0.95 * (Y + 80) + bend)
        obl_r = Z - (60 + self.jit["fis_r"] - 0.95 * (Y + 80) + bend)
        hor = Z - (12 + self.jit["fis_h"] - 0.12 * Y)
        lobe = np.where(left, np.where(obl_l > 0, LABEL["lung_upper_lobe_left"],
                                       LABEL["lung_lower_lobe_left"]),
                        np.where(obl_r <= 0, LABEL["lung_lower_lobe_right"],
                                 np.where(hor > 0, LABEL["lung_upper_lobe_right"],
                                          LABEL["lung_middle_lobe_right"])))
        # Parenchyma: denser with age and toward the dependent (posterior) lung.
        dep = np.clip((20 - Y) / 100, 0, 1) ** 2
        hu = -930 + 0.45 * (self.age - 20) + 50 * dep
        # Fissures: a faint line of pleura (partial volume at this resolution).
        fis = np.where(left, np.abs(obl_l), np.minimum(np.abs(obl_r), np.where(obl_r > 0, np.abs(hor), 99)))
        hu = hu + 180 * np.exp(-(fis / 2.5) ** 2)
        self.hu[box][lung] = hu[lung]
        self.lab[box][lung] = lobe[lung]
        self.fissure_dist = np.full(self.f.shape, 99, np.float32)
        self.fissure_dist[box][lung] = fis[lung]

    def spine(self):
        """Vertebral bodies, discs, canal and neural arches; cortex denser than marrow."""
        zs = 118 + self.jit["rib_z"] - 24.0 * np.arange(-2, 15)
        self.levels = zs
        canc = 265 * self.bone_age + 15
        cort = 780 * (1 - 0.0025 * (self.age - 20))

        def body_sdf(P):
            yc = self.spine_y(P[2])
            q = np.sqrt((P[0] / 21.0) ** 2 + ((P[1] - yc) / 16.0) ** 2)
            return (q - 1) * 16.0

        def body_hu(P):
            return np.where(body_sdf(P) > -3.5, cort, canc)
        # Fat halo, then the bony column, then discs (background) between levels.
        self.paint(body_sdf, (-22, -80, -400), (22, -20, 400), HU["med_fat"], 0, self.in_lung, 4)
        self.paint(body_sdf, (-22, -80, -400), (22, -20, 400), body_hu, LABEL["vertebrae"])
        def disc(P, box):                                      # 6 mm: one slice per level at 6 mm
            return np.abs((P[2] - zs[0] + 12.0) % 24.0 - 12.0) < 3.0
        self.paint(body_sdf, (-22, -80, -400), (22, -20, 400), HU["disc"], 0, disc)
        for zc in zs:
            yb = float(self.spine_y(zc))
            cy = yb - 25.0                                     # spinal canal centre
            def arch(P, cy=cy, zc=zc):                         # pedicles + laminae around the canal
                ring = np.abs(np.sqrt(P[0] ** 2 + (P[1] - cy) ** 2) - 12.0) - 5.0
                return np.maximum(ring, np.maximum(np.abs(P[2] - zc) - 9.0, P[1] - cy - 4.0))
            self.paint(arch, (-18, cy - 18, zc - 10), (18, cy + 8, zc + 10), cort * 0.7,
                       LABEL["vertebrae"])
            self.paint(lambda P, cy=cy, zc=zc: np.sqrt(P[0] ** 2 + (P[1] - cy) ** 2) - 7.0,
                       (-8, cy - 8, zc - 12), (8, cy + 8, zc + 12), HU["csf"], 0)
            spinous = [(0, cy - 12, zc - 2), (0, cy - 30, zc - 12)]
            self.tube(spinous, 5.5, cort * 0.7, LABEL["vertebrae"])
            for sx in (-1, 1):
                self.tube([(sx * 12, cy - 2, zc), (sx * 32, cy - 8, zc + 2)], 6.0, cort * 0.7,
                          LABEL["vertebrae"])
        # Spinal canal between levels (cord and CSF).
        self.paint(lambda P: np.sqrt(P[0] ** 2 + (P[1] - self.spine_y(P[2]) + 25) ** 2) - 7.0,
                   (-8, -90, -400), (8, -60, 400), HU["csf"], 0)

    def autochthon(self):
        """Erector spinae: paired muscle columns beside the spinous processes."""
        for sx, name in ((-1, "autochthon_left"), (1, "autochthon_right")):
            def sdf(P, sx=sx):
                yc = self.spine_y(P[2]) - 47.0
                q = np.sqrt(((P[0] - sx * 29.0) / 20.0) ** 2 + ((P[1] - yc) / 13.0) ** 2)
                return (q - 1) * 13.0
            lo, hi = (sx * 29 - 20, -125, -400), (sx * 29 + 20, -60, 400)
            self.paint(sdf, lo, hi, -60.0, 0, lambda P, box: ~self.in_lung(P, box), 3)  # fascia
            self.paint(sdf, lo, hi, 50.0, LABEL[name])

    def ribs(self):
        """Twelve rib pairs: head at the spine, around the wall, descending anteriorly;
        costal cartilages of ribs 1-10 continue to the sternum (1-7) or costal margin."""
        cart = HU["cartilage"]
        bone = 520 * self.bone_age + 60
        ends = np.linspace(70, -82, 7)                       # sternal attachment heights
        self.sternum_z = (ends[0] + 8, ends[-1] - 22)
        for k in range(12):
            z0 = self.levels[2 + k]
            drop = min(42 + 11 * k, 100)
            phi_end = 2.25 if k < 10 else 1.85
            for sx in (-1, 1):
                phi = np.linspace(0.55, phi_end, 12)
                z = z0 - 4 - drop * (phi - phi[0]) / (phi[-1] - phi[0])
                pts = self._ring_pts(sx, phi, z, 10.0)
                yb = float(self.spine_y(z0))
                head = [(sx * 20, yb - 2, z0), (sx * 32, yb - 31, z0 - 2)]
                self.tube(head + [tuple(p) for p in pts], 6.5, bone, LABEL["ribs"])
                if k < 10:
                    self._cartilage(sx, k, pts[-1], ends, cart)

    def _ring_pts(self, sx, phi, z, out):
        """Points on the cavity ring (+ ``out`` mm) at angle phi from the posterior midline."""
        A, Ba, Bp = self.ring(z)
        A, B = A + out, np.where(phi > np.pi / 2, Ba, Bp) + out
        r = 1 / np.sqrt((np.sin(phi) / A) ** 2 + (np.cos(phi) / B) ** 2)
        return np.stack([sx * r * np.sin(phi), self.CY - r * np.cos(phi), z], 1)

    def _cartilage(self, sx, k, start, ends, hu):
        if k < 7:
            phi = np.linspace(2.25, 2.86, 6)
            z = np.linspace(start[2], ends[k], 6)
        else:                                               # false ribs: end at the costal margin
            phi = np.linspace(2.25, 2.6, 4)
            z = np.linspace(start[2], start[2] + 12, 4)
        pts = self._ring_pts(sx, phi, z, 10.0)
        self.tube([tuple(start)] + [tuple(p) for p in pts], 6.5, hu, LABEL["costal_cartilages"])

    def sternum(self):
        """Manubrium, body and xiphoid: a flat bone in the anterior midline."""
        top, bot = self.sternum_z
        bone = 330 * self.bone_age + 40
        cort = 650 * (1 - 0.0025 * (self.age - 20))

        def sdf(P):
            half_w = np.where(P[2] > top - 28, 26.0, np.where(P[2] < bot + 15, 9.0, 17.0))
            yc = self.CY + self.ring(P[2])[1] + 10.0
            q = np.sqrt((P[0] / half_w) ** 2 + ((P[1] - yc) / 8.5) ** 2)
            return np.maximum((q - 1) * 8.5, np.maximum(P[2] - top, bot - P[2]))
        self.paint(sdf, (-30, 30, bot), (30, 110, top), lambda P: np.where(sdf(P) > -3, cort, bone),
                   LABEL["sternum"])

    def _heart_parts(self):
        """(centre, semi-axes, rotation) of the ventricles, left atrium and right atrium."""
        j = self.jit
        u = np.array([-0.72, 0.5, -0.42])                 # long axis: apex left-anterior-inferior
        u /= np.linalg.norm(u)
        v = np.cross([0, 0, 1.0], u)
        v /= np.linalg.norm(v)
        rot = np.stack([u, v, np.cross(u, v)])
        return [((-22 + j["heart_x"], 30 + j["heart_y"], -56 + j["heart_z"]), (60, 38, 44), rot),
                ((-4 + j["heart_x"], 10 + j["heart_y"], -32 + j["heart_z"]), (34, 15, 24), None),
                ((26 + j["heart_x"], 14 + j["heart_y"], -46 + j["heart_z"]), (26, 26, 32), None)]

    def heart(self):
        """Ventricles (rotated ellipsoid) plus both atria; painted over the vessels'
        roots, so the aorta and veins end at the heart's surface."""
        for halo, hu, lab, where in ((6.0, HU["med_fat"], 0, self.in_lung),
                                     (0.0, HU["blood"], LABEL["heart"], None)):
            for c, r, rt in self.heart_parts:
                R = max(r)
                self.paint(lambda P, c=c, r=r, rt=rt: _ellipsoid(P, c, r, rt),
                           np.subtract(c, R), np.add(c, R), hu, lab, where, halo)

    def great_vessels(self):
        """Aorta (ascending, arch, descending left of the spine), pulmonary trunk, SVC."""
        j, age = self.jit, self.age
        r0 = 14.0 + 0.04 * (age - 20)                       # the aorta widens with age
        za = 70 + j["arch_z"]
        def sy(z):
            return float(self.spine_y(z))
        aorta = [(2, 20, -30), (8, 30, 0), (11, 30, za - 30), (3, 23, za - 6), (-12, 6, za + 4),
                 (-25, -12, za - 4), (-28, sy(za - 20) + 19, za - 25), (-28, sy(0) + 18, 0),
                 (-23, sy(-100) + 21, -100), (-16, sy(-160) + 24, -160)]
        radii = [r0 + 1, r0 + 1, r0 + 0.5, r0, r0 - 0.5, r0 - 1, r0 - 1.5, r0 - 2, r0 - 2.5, r0 - 2.5]
        self.tube(aorta, radii, HU["blood"], LABEL["aorta"], halo=5)
        pa = [(4, 44, -14), (-10, 34, 18), (-22, 22, 28)]
        self.tube(pa, 13.0, HU["blood"], None, halo=4)
        self.tube([(-22, 22, 28), (-45, 6, 30), (-68, -2, 22)], 10.0, HU["blood"], None, halo=3)
        self.tube([(-22, 22, 28), (0, 8, 30), (32, 6, 27), (60, 0, 20)], 10.0, HU["blood"], None,
                  halo=3)
        self.tube([(27, 18, 115), (26, 20, 40), (25, 16, -20)], 10.0, HU["blood"], None, halo=4)
        self.tube([(-5, sy(120) + 30, 150), (-4, sy(40) + 27, 40), (-8, sy(-60) + 27, -60),
                   (-18, sy(-140) + 34, -140)], 8.0, HU["wall"], None, halo=3)   # oesophagus

    def airways(self):
        """Trachea and main bronchi: soft-tissue wall around an air lumen, one label."""
        top, carina = (0, 24, 170), (0, -6, 42 + self.jit["arch_z"] * 0.5)
        mid = (0, 8, 95)
        left = [carina, (-26, -8, carina[2] - 14), (-52, -8, carina[2] - 30)]
        right = [carina, (24, -10, carina[2] - 10), (46, -12, carina[2] - 22)]
        tubes = (([top, mid, carina], 10.5, 7.5), (left, 7.5, 4.5), (right, 8.0, 5.0))
        for pts, r, _ in tubes:
            self.tube(pts, r, HU["wall"], LABEL["trachea"], halo=3)
        for pts, _, lumen in tubes:                         # after all walls: open bifurcation
            self.tube(pts, lumen, HU["air"], None)

    def pulmonary_veins(self):
        """Four veins from the lung hila into the left atrium (posterior heart)."""
        (cx, cy, cz), _, _ = self.heart_parts[1]
        for sx in (-1, 1):
            for dz, ang in ((10, 0.25), (-14, -0.35)):
                start = (cx + sx * 20, cy - 4, cz + dz)
                hil = (sx * 62, cy - 8 + 8 * ang, cz + dz + 40 * ang)
                tip = (sx * 96, cy - 14 + 20 * ang, cz + dz + 95 * ang)
                self.tube([start, hil, tip], [7.5, 7.0, 6.0], HU["blood"],
                          LABEL["pulmonary_vein"], halo=2)

    def thyroid(self):
        """Two lobes beside the trachea joined by an anterior isthmus (iodine-rich)."""
        z = 118 + self.jit["thy_z"]
        for sx in (-1, 1):
            c, r = (sx * 21, 14, z), (11, 13, 22)
            self.paint(lambda P, c=c, r=r: _ellipsoid(P, c, r), np.subtract(c, 22), np.add(c, 22),
                       HU["thyroid"], LABEL["thyroid_gland"])
        self.tube([(-16, 30, z - 8), (0, 34, z - 8), (16, 30, z - 8)], 6.5, HU["thyroid"],
                  LABEL["thyroid_gland"])


# ---------------------------------------------------------------- texture, pathology, scanner

def _smooth_noise(rng, shape, sigma_vox, std=1.0):
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return n * np.float32(std / max(float(n.std()), 1e-6))


def _textures(p: _Painter, rng, lung):
    """Soft-tissue heterogeneity and lung vessels, so intensities are not piecewise flat."""
    hu, sp = p.hu, p.f.spacing
    soft = (hu > -200) & (hu < 200)
    hu += np.where(soft, _smooth_noise(rng, hu.shape, 4.0 / sp, 8.0), 0)
    # Lung vessels: bright branching specks, denser and thicker toward the hila.
    hilum = np.sqrt((np.abs(p.f.X) - 55) ** 2 + (p.f.Y + 5) ** 2 + ((p.f.Z + 10) / 1.5) ** 2)
    near = np.exp(-hilum / 70.0)
    field = _smooth_noise(rng, hu.shape, 2.0 / sp)
    vessel = lung & (field > 1.7 - 1.0 * near)
    hu[vessel] += (280 + 380 * near[vessel])


def _effusion(p: _Painter, rng, frac):
    """Pleural fluid layering posteriorly and at the base of one pleural space."""
    lab = p.lab
    side = rng.integers(2)
    ids = (LABEL["lung_upper_lobe_left"], LABEL["lung_lower_lobe_left"]) if side == 0 else \
        (LABEL["lung_upper_lobe_right"], LABEL["lung_middle_lobe_right"], LABEL["lung_lower_lobe_right"])
    lung = np.isin(lab, ids)
    score = p.f.Y + 1.0 * p.f.Z                            # low = dependent (posterior, inferior)
    thr = np.quantile(score[lung], frac)
    fluid = lung & (score <= thr)
    band = lung & (score > thr) & (score <= thr + 10)       # compressive atelectasis above it
    p.hu[band] += 260
    p.hu[fluid] = HU["fluid"]
    lab[fluid] = 0
    return fluid


def _consolidation(p: _Painter, rng):
    """A blob of airless lung inside one lobe (it keeps the lobe's label)."""
    lobes = ["lung_lower_lobe_left", "lung_lower_lobe_right", "lung_upper_lobe_left",
             "lung_upper_lobe_right", "lung_middle_lobe_right"]
    name = lobes[rng.choice(5, p=[0.28, 0.28, 0.16, 0.16, 0.12])]
    lobe = p.lab == LABEL[name]
    depth = ndimage.distance_transform_edt(lobe, sampling=p.f.spacing)
    cand = np.argwhere(depth >= min(12.0, depth.max() * 0.6))
    c = cand[rng.integers(len(cand))]
    world = [p.f.world[i].reshape(-1) for i in range(3)]
    cw = [world[i][c[i]] for i in range(3)]
    r = rng.uniform(40, 60, 3)  # lobar-sized: large enough to change the model's behaviour
    W = np.meshgrid(*world, indexing="ij", sparse=True)
    q = sum(((W[i] - cw[i]) / r[i]) ** 2 for i in range(3))
    wobble = _smooth_noise(rng, p.lab.shape, 8.0 / p.f.spacing, 0.25)
    blob = lobe & (q + wobble < 1.0)
    if blob.sum() < 8:                                      # tiny lobe: take its core instead
        blob = lobe & (depth >= np.quantile(depth[lobe], 0.7))
    p.hu[blob] = rng.uniform(-40, 30) + _smooth_noise(rng, p.lab.shape, 1.0, 15.0)[blob]
    return blob


def _scanner(hu, rng, spacing, kernel):
    """Blur then noise; the sharp kernel adds edge enhancement and finer, stronger noise."""
    sp = np.asarray(spacing)
    if kernel == "standard":
        out = ndimage.gaussian_filter(hu, 3.0 / sp)
        out += _smooth_noise(rng, hu.shape, 0.7, 18.0)
    else:
        out = ndimage.gaussian_filter(hu, 2.5 / sp)
        out += 0.25 * (out - ndimage.gaussian_filter(out, 3.0 / sp))  # edge enhancement
        white = rng.standard_normal(hu.shape).astype(np.float32)
        white -= 0.5 * ndimage.gaussian_filter(white, 1.0)              # high-pass texture
        out += white * np.float32(42.0 / white.std())
    return np.clip(out, -1024, 3071).astype(np.float32)


# ---------------------------------------------------------------- public API

def make_phantom(seed: int, sex: str, age: float, shape=(64, 48, 48), spacing=(6.0, 6.0, 6.0),
                 pathology: tuple[str, ...] = (), kernel: str = "standard") -> Phantom:
    """One thorax phantom, deterministic in all its arguments."""
    if sex not in ("F", "M"):
        raise InputError("sex", f"must be 'F' or 'M', got {sex!r}")
    if kernel not in KERNELS:
        raise InputError("kernel", f"must be one of {KERNELS}, got {kernel!r}")
    unknown = set(pathology) - set(PATHOLOGY_ROIS)
    if unknown:
        raise InputError("pathology", f"unknown {sorted(unknown)}; known: {PATHOLOGY_ROIS}")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7407]))
    size = (1.0 if sex == "M" else 0.915) * rng.normal(1.0, 0.025)
    scale = size * np.clip(rng.normal(1.0, 0.02, 3), 0.95, 1.05)
    shift = np.clip(rng.normal(0, [5.0, 4.0, 7.0]), -10, 10)
    frame = _Frame(shape, spacing, rng.normal(0, 2.5), scale, shift)
    p = _Painter(frame, rng, sex, float(age))
    for step in (p.body, p.cavity, p.lungs, p.autochthon, p.spine,
                 p.ribs, p.sternum, p.great_vessels, p.airways, p.pulmonary_veins, p.heart,
                 p.thyroid):
        step()
    lung = (p.lab >= LABEL["lung_upper_lobe_left"]) & (p.lab <= LABEL["lung_lower_lobe_right"])
    _textures(p, rng, lung & (p.fissure_dist > 6))
    rois = {}
    if "pleural_effusion" in pathology:                     # first: fluid is no longer lung
        rois["pleural_effusion"] = _effusion(p, rng, rng.uniform(0.22, 0.35))  # moderate to large
    if "consolidation" in pathology:
        rois["consolidation"] = _consolidation(p, rng)
    hu = _scanner(p.hu, rng, spacing, kernel)
    return Phantom(hu=hu, labels=p.lab, rois=rois, affine=frame.affine, sex=sex, age=float(age),
                   kernel=kernel, seed=int(seed), spacing=spacing)


def _pathology_plan(n: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """About a third of the external cases (at least 5 of 16) carry pathology."""
    k = min(n, int(np.ceil(0.35 * n)))
    kinds = [("pleural_effusion",), ("consolidation",), ("pleural_effusion", "consolidation")]
    plan: list[tuple[str, ...]] = [()] * n
    for slot, idx in enumerate(sorted(rng.choice(n, k, replace=False))):
        plan[idx] = kinds[slot % 3]
    return plan


def _cohort_plan(n_reference, n_test, n_external, seed):
    """Case specifications: balanced sexes, ages uniform in 20-90, per-case seeds."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0405]))
    cases = []
    for dataset, prefix, n in (("reference", "ref", n_reference), ("external", "ext", n_external)):
        sexes = rng.permutation(np.resize(["F", "M"], n))
        ages = np.rint(20 + 70 * (rng.permutation(n) + rng.random(n)) / max(n, 1)).astype(int)
        seeds = rng.integers(0, 2 ** 31 - 1, n)
        if dataset == "reference":
            test = set(rng.choice(n, n_test, replace=False).tolist()) if n else set()
            splits = ["test" if i in test else "train" for i in range(n)]
            paths, kernel = [()] * n, "standard"
        else:
            splits, paths, kernel = ["test"] * n, _pathology_plan(n, rng), "sharp"
        for i in range(n):
            cases.append(dict(case_id=f"{prefix}-{i:03d}", sex=str(sexes[i]), age=int(ages[i]),
                              dataset=dataset, split=splits[i], kernel=kernel,
                              pathology=paths[i], seed=int(seeds[i])))
    return cases


def _save_nifti(arr, affine, path: Path):
    import nibabel as nib
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


MANIFEST_COLUMNS = ["case_id", "image", "label", "sex", "age", "dataset", "split"] + \
    [f"roi:{r}" for r in PATHOLOGY_ROIS]


def generate_cohort(out_dir, n_reference: int = 20, n_test: int = 8, n_external: int = 16,
                    shape=(64, 48, 48), spacing=(6.0, 6.0, 6.0), seed: int = 0) -> Path:
    """Write the demo cohort (NIfTI images, labels, RoI masks) and its manifest; return
    the manifest path. Paths in the manifest are relative to it."""
    _check_cohort_args(n_reference, n_test, n_external, shape, spacing)
    out = Path(out_dir)
    for sub in ("images", "labels", "rois"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for c in _cohort_plan(n_reference, n_test, n_external, seed):
        ph = make_phantom(c["seed"], c["sex"], c["age"], shape, spacing, c["pathology"], c["kernel"])
        cid = c["case_id"]
        row = dict(case_id=cid, image=f"images/{cid}.nii.gz", label=f"labels/{cid}.nii.gz",
                   sex=c["sex"], age=c["age"], dataset=c["dataset"], split=c["split"])
        hu = np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16)
        _save_nifti(hu, ph.affine, out / row["image"])
        _save_nifti(ph.labels.astype(np.uint8), ph.affine, out / row["label"])
        for name in PATHOLOGY_ROIS:
            row[f"roi:{name}"] = ""
            if name in ph.rois:
                row[f"roi:{name}"] = f"rois/{cid}_{name}.nii.gz"
                _save_nifti(ph.rois[name].astype(np.uint8), ph.affine, out / row[f"roi:{name}"])
        rows.append(row)
    manifest = out / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(manifest)                                   # readers never see half a manifest
    return manifest


def _check_cohort_args(n_reference, n_test, n_external, shape, spacing):
    if min(n_reference, n_test, n_external) < 0:
        raise InputError("cohort size", "case counts must be >= 0")
    if n_test > n_reference:
        raise InputError("n_test", f"{n_test} test cases but only {n_reference} reference cases")
    if len(shape) != 3 or min(shape) < 8:
        raise InputError("shape", f"need three sizes >= 8, got {tuple(shape)}")
    if np.size(spacing) not in (1, 3) or np.min(spacing) <= 0:
        raise InputError("spacing", f"need one or three positive values (mm), got {spacing}")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``phantoms`` subcommand to the CLI."""
    p = subparsers.add_parser(
        "phantoms", help="generate the synthetic thorax-CT demo cohort",
        description="Write synthetic thorax CTs (17 labels, pleural effusion / consolidation "
                    "masks on the external set) as NIfTI plus a manifest.csv.")
    p.add_argument("--out", type=Path, default=Path("data/demo/cohort"), help="output folder")
    p.add_argument("--n-reference", type=int, default=20, help="healthy reference cases")
    p.add_argument("--n-test", type=int, default=8, help="reference cases in the test split")
    p.add_argument("--n-external", type=int, default=16, help="external (sharp kernel) cases")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 48, 48], metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs="+", default=[6.0], metavar="MM",
                   help="voxel size in mm: one value or three (x y z)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cli_phantoms)
    return p


def _cli_phantoms(args) -> int:
    spacing = tuple(args.spacing) * 3 if len(args.spacing) == 1 else tuple(args.spacing)
    manifest = generate_cohort(args.out, args.n_reference, args.n_test, args.n_external,
                               tuple(args.shape), spacing, args.seed)
    print(manifest)
    return 0


_COLORS = dict(  # distinct overlay colours per label (the dashboard groups them by colour)
    aorta="#e6194b", lung_upper_lobe_left="#f58231", lung_lower_lobe_left="#ffe119",
    lung_upper_lobe_right="#3cb44b", lung_middle_lobe_right="#aaffc3",
    lung_lower_lobe_right="#008080", trachea="#42d4f4", heart="#f032e6",
    pulmonary_vein="#911eb4", thyroid_gland="#9a6324", ribs="#4363d8", vertebrae="#000075",
    autochthon_left="#bfef45", autochthon_right="#808000", sternum="#dcbeff",
    costal_cartilages="#fabed4", pleural_effusion="#0000ff", consolidation="#ff0000")


def save_preview(ph: Phantom, path, title: str | None = None, focus: str = "heart"):
    """Axial, coronal and sagittal slices through the heart (or through the label or RoI
    named ``focus``) in a lung window, a mediastinal window, and with labels overlaid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    where = np.argwhere(ph.rois[focus] if focus in ph.rois else ph.labels == LABEL[focus])
    i, j, k = where.mean(0).round().astype(int) if len(where) else np.array(ph.labels.shape) // 2
    spine = np.argwhere(ph.labels[:, :, k] == LABEL["vertebrae"])
    if focus == "heart" and len(spine):                      # sagittal through the spine too
        i = int(round(np.median(spine[:, 0])))
    sp = ph.spacing
    # Radiological display: patient's right on the viewer's left, anterior/superior up.
    views = [("axial", lambda a: a[::-1, ::-1, k].T, (sp[0], sp[1])),
             ("coronal", lambda a: a[::-1, j, ::-1].T, (sp[0], sp[2])),
             ("sagittal", lambda a: a[i, ::-1, ::-1].T, (sp[1], sp[2]))]
    names = list(THORAX_LABELS)
    colors = [_COLORS.get(n, "#ffffff") for n in names]
    cmap = ListedColormap(colors)
    rows = [("lung W1500 L-600", (-1350, 150), False), ("mediastinum W400 L40", (-160, 240), False),
            ("labels", (-1350, 150), True)]
    fig, axes = plt.subplots(3, 3, figsize=(12, 11), gridspec_kw=dict(wspace=0.03, hspace=0.05))
    for col, (name, cut, (sw, sh)) in enumerate(views):
        img = cut(ph.hu)
        ext = (0, img.shape[1] * sw, 0, img.shape[0] * sh)
        for row, (rname, (lo, hi), overlay) in enumerate(rows):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="bilinear")
            if overlay:
                ax.imshow(np.ma.masked_equal(cut(ph.labels), 0), cmap=cmap, vmin=-0.5,
                          vmax=len(colors) - 0.5, alpha=0.5, extent=ext, interpolation="nearest")
                for name, mask in ph.rois.items():           # pathology: outlined, not filled
                    m = cut(mask.astype(np.float32))
                    if m.any():
                        ax.contour(m, levels=[0.5], colors=[_COLORS[name]], linewidths=2,
                                   extent=(sw / 2, ext[1] - sw / 2, ext[3] - sh / 2, sh / 2))
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(rname)
    handles = [Patch(facecolor=colors[c], edgecolor="k", linewidth=0.3, label=n)
               for c, n in enumerate(names) if c > 0]
    handles += [Patch(facecolor="none", edgecolor=_COLORS[n], linewidth=2, label=f"{n} (RoI)")
                for n in ph.rois]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title or f"synthetic thorax CT: seed {ph.seed}, sex {ph.sex}, age {ph.age:.0f}, "
                 f"{ph.kernel} kernel (patient's right on the viewer's left)")
    fig.subplots_adjust(left=0.03, right=0.82, top=0.95, bottom=0.01)
    fig.savefig(path, dpi=80)
    plt.close(fig)
