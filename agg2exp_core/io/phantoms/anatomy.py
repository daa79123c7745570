"""The anatomy painter: each method paints one structure of the thorax into HU and labels."""
from __future__ import annotations

import numpy as np

from agg2exp_core.io.phantoms.shapes import _bounds, _ellipsoid, _Frame, _polyline
from agg2exp_core.labels import THORAX_LABELS

LABEL = {name: i for i, name in enumerate(THORAX_LABELS)}

# Hounsfield units of the tissues (non-contrast scan: blood and myocardium alike).
HU = dict(air=-1000.0, fat=-95.0, med_fat=-75.0, muscle=45.0, blood=40.0, wall=30.0,
          thyroid=90.0, liver=58.0, abdomen=35.0, cartilage=130.0, csf=15.0,
          disc=85.0, fluid=15.0, breast=-40.0)


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
