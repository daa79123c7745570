"""Each attack against the tree on sys.path[0]; prints what it gets (and how long it took)."""
import os, sys, tempfile, threading, time
from pathlib import Path
import numpy as np, SimpleITK as sitk, nibabel as nib
from agg2exp_core.io.images import load_volume
from agg2exp_core.io.manifest import read_manifest

def attempt(name, fn, deadline=15):
    out = {}
    def run():
        try:
            out["v"] = fn()
        except Exception as e:
            out["e"] = f"{type(e).__name__}: {e}"
    t0 = time.monotonic(); th = threading.Thread(target=run, daemon=True); th.start(); th.join(deadline)
    dt = time.monotonic() - t0
    what = f"BLOCKED > {deadline} s" if th.is_alive() else out.get("e") or f"accepted: {str(out.get('v'))[:90]}"
    print(f"- {name}: {what} ({dt:.2f} s)".replace(str(root), "…"))

root = Path(tempfile.mkdtemp())
vol = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
for suffix, key in ((".mhd", "ElementDataFile = "), (".nhdr", "data file: ")):
    h = root / f"p{suffix}"; sitk.WriteImage(sitk.GetImageFromArray(vol), str(h))
    text = h.read_text()
    line = next(l for l in text.splitlines() if l.startswith(key.strip()[:8]))
    h.write_text(text.replace(line, key + "/etc/passwd"))
    attempt(f"{suffix} naming /etc/passwd", lambda h=h: bytes(load_volume(h)[0].astype(np.int16).tobytes()[:16]))
    os.mkfifo(root / f"fifo{suffix}.raw")
    h.write_text(text.replace(line, key + f"fifo{suffix}.raw"))
    attempt(f"{suffix} naming a FIFO", lambda h=h: load_volume(h)[0].shape)
os.mkfifo(root / "scan.nii.gz")
attempt("FIFO as the scan (load_volume)", lambda: load_volume(root / "scan.nii.gz")[0].shape)
img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)); img.header["pixdim"][1:4] = 0; img.set_sform(None, code=0)
nib.save(img, str(root / "p0.nii")); attempt("NIfTI pixdim 0", lambda: load_volume(root / "p0.nii")[1].diagonal())
nib.save(nib.Nifti1Image(np.full((4, 4, 4), 1 + 2j, np.complex64), np.eye(4)), str(root / "c.nii"))
attempt("complex64 NIfTI", lambda: load_volume(root / "c.nii")[0][0, 0, :2])
nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.int16), np.eye(4)), str(root / "ct.nii.gz"))
nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.int16), np.eye(4)), str(root.parent / f"{root.name}-secret.nii.gz"))
def man(name, body, enc="utf-8"):
    (root / name).write_bytes(body.encode(enc)); return lambda: list(read_manifest(root / name).case_id)
attempt("manifest Latin-1", man("l1.csv", "case_id,image,dataset\nc0,ct.nii.gz,Hôpital\n", "latin-1"))
attempt("manifest UTF-16", man("u16.csv", "case_id,image\nc0,ct.nii.gz\n", "utf-16"))
attempt("ids Case1 / case1", man("ci.csv", "case_id,image\nCase1,ct.nii.gz\ncase1,ct.nii.gz\n"))
attempt("300-character id", man("long.csv", f"case_id,image\n{'c' * 300},ct.nii.gz\n"))
attempt("absolute path out of the cohort", man("abs.csv", f"case_id,image\nc0,{root.parent / (root.name + '-secret.nii.gz')}\n"))
(root / "link.nii.gz").symlink_to(root.parent / f"{root.name}-secret.nii.gz")
attempt("symlink out of the cohort", man("sym.csv", "case_id,image\nc0,link.nii.gz\n"))
sys.path.insert(0, "/work/wt/sec-inputs/tests/support")
from dicom_series import write_ct_series
import pydicom
def dicom(tag, value, vr=None):
    f = write_ct_series(Path(tempfile.mkdtemp()) / "s", np.zeros((8, 8, 4), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    p = sorted(f.iterdir())[2]; ds = pydicom.dcmread(p)
    if vr:
        from pydicom.dataelem import DataElement; from pydicom.datadict import tag_for_keyword
        ds[tag_for_keyword(tag)] = DataElement(tag_for_keyword(tag), vr, value)
    else:
        setattr(ds, tag, value)
    ds.save_as(p); return lambda: load_volume(f)[0].shape
attempt("DICOM with 5 orientation values", dicom("ImageOrientationPatient", [1, 0, 0, 0, 1]))
attempt("DICOM InstanceNumber 'abc'", dicom("InstanceNumber", "abc", "LO"))
f = write_ct_series(Path(tempfile.mkdtemp()) / "s", np.zeros((512, 512, 3), np.int16), np.diag([0.7, 0.7, 20000.0, 1.0]))
for p in f.iterdir():
    ds = pydicom.dcmread(p); ds.SliceThickness = 1.0; ds.save_as(p)
from agg2exp_core.io.dicom import read_dicom_series
def header_check_only():
    import agg2exp_core.io.dicom as d
    real = d._read_voxels
    d._read_voxels = lambda folder: ("passed the size check; would resample", None)
    try:
        return read_dicom_series(f, target_spacing=(1.5, 1.5, 1.5))[0]
    finally:
        d._read_voxels = real
attempt("DICOM 512x512x3 slices 20 m apart, SliceThickness 1, model at 1.5 mm", header_check_only)
