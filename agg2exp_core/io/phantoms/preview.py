"""The figure of docs/phantom.png: three planes, two CT windows and the labels (matplotlib)."""
from __future__ import annotations

import numpy as np

from agg2exp_core.io.phantoms.anatomy import LABEL
from agg2exp_core.io.phantoms.cohort import Phantom
from agg2exp_core.labels import THORAX_LABELS


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
