"""Bad input at the command line: exit status 2, exactly one stderr line naming the file
or parameter and the problem, and the store left unchanged byte for byte.

The validators themselves are unit-tested in test_cohort.py, test_model.py and
test_store_importer.py; here every case goes through ``agg2exp_core.cli.main`` (the
function behind ``python -m agg2exp_core``) and a few through the real interpreter.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from agg2exp_core.io.preprocessing import Preprocessing
from agg2exp_core.models import build_network, save_checkpoint
from agg2exp_core.pipeline.precompute import precompute
from cohorts import (CLI, LABELS, REPO, SHAPE, SMALL_UNET, cli_env, fingerprint,
                                      make_checkpoint, make_cohort)

PUBLISHED = REPO / "data" / "agg2exp-tsv2" / "tsv2_test_aggregated_sg_explanations_with_dice.csv"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A cohort, good and bad checkpoints, bad CSVs, and a store that already holds one run."""
    root = tmp_path_factory.mktemp("cli")
    manifest = make_cohort(root / "cohort", n=3)
    good = make_checkpoint(root / "good.pt")
    net = build_network(SMALL_UNET, len(LABELS))
    prep = Preprocessing(spacing=None)
    save_checkpoint(root / "four_labels.pt", net, SMALL_UNET, LABELS + ["extra"], prep, roi_size=SHAPE)
    other = {"name": "unet", "params": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
    save_checkpoint(root / "other_config.pt", net, other, LABELS, prep, roi_size=SHAPE)
    torch.save(net.state_dict(), root / "plain.pt")
    (root / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(2048))
    (root / "truncated.pt").write_bytes(good.read_bytes()[:1000])

    bad = root / "bad"
    bad.mkdir()
    header = "case_id,image,label,sex,age,dataset,split\n"
    row = "{id},../cohort/{id}_ct.nii.gz,../cohort/{id}_seg.nii.gz,{sex},{age},ref,train\n"
    manifests = {
        "dup.csv": header + row.format(id="c0", sex="F", age=40) + row.format(id="c0", sex="M", age=41),
        "nocol.csv": "case_id,label\nc0,../cohort/c0_seg.nii.gz\n",
        "sex.csv": header + row.format(id="c0", sex="unknown", age=40),
        "age.csv": header + row.format(id="c0", sex="F", age=-5),
        "age2.csv": header + row.format(id="c0", sex="F", age=999),
        "path.csv": header + "c0,../cohort/nowhere.nii.gz,,F,40,ref,train\n",
        "dirpath.csv": header + "c0,../cohort,,F,40,ref,train\n",
        "binary.csv": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage",
    }
    for name, body in manifests.items():
        (bad / name).write_bytes(body if isinstance(body, bytes) else body.encode())

    csv = pd.read_csv(PUBLISHED)
    variants = {"sum.csv": csv.assign(**{"heart_explanation_in_aorta_mass": csv["heart_explanation_in_aorta_mass"] + 0.25}),
                "missing_mass.csv": csv.drop(columns=["ribs_explanation_in_sternum_mass"]),
                "dup_patient.csv": pd.concat([csv, csv.iloc[[0]]], ignore_index=True),
                "text_mass.csv": csv.astype({"aorta_explanation_in_heart_mass": object}).assign(
                    aorta_explanation_in_heart_mass=["x"] + list(csv.aorta_explanation_in_heart_mass[1:]))}
    for name, frame in variants.items():
        frame.to_csv(bad / name, index=False)
    (bad / "meta_sex.csv").write_text("case_id,sex,age\ns0029,X,61\n")
    (bad / "meta_age.csv").write_text("case_id,sex,age\ns0029,F,300\n")
    (bad / "meta_nocase.csv").write_text("patient,sex,age\ns0029,F,61\n")
    (bad / "meta_dup.csv").write_text("case_id,sex,age\ns0029,F,61\ns0029,M,62\n")

    store_dir = root / "store"
    db = store_dir / "s.duckdb"
    precompute(manifest, good, db, "vg", device="cpu", progress=False)
    return {"root": root, "manifest": manifest, "good": good, "bad": bad, "db": db, "store_dir": store_dir}


def call_cli(argv, capfd) -> tuple[int, str, str]:
    """Run ``agg2exp_core.cli.main`` in this process; (exit status, stdout, stderr)."""
    from agg2exp_core import cli
    capfd.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        rc = exit_.code
    out, err = capfd.readouterr()
    return rc, out, err


def assert_one_line(rc: int, out: str, err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err and out == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# (argument builder, fragments the one line must contain)
PRECOMPUTE_CASES = {
    "manifest not found": (lambda w: ["--manifest", w["bad"] / "none.csv"], ["none.csv", "file not found"]),
    "manifest is binary": (lambda w: ["--manifest", w["bad"] / "binary.csv"], ["binary.csv"]),
    "duplicate case ids": (lambda w: ["--manifest", w["bad"] / "dup.csv"], ["dup.csv", "duplicate case_id 'c0'"]),
    "missing column": (lambda w: ["--manifest", w["bad"] / "nocol.csv"], ["nocol.csv", "missing column(s) image"]),
    "unknown sex code": (lambda w: ["--manifest", w["bad"] / "sex.csv"], ["sex.csv", "unknown sex code 'unknown'"]),
    "negative age": (lambda w: ["--manifest", w["bad"] / "age.csv"], ["age.csv", "impossible age -5"]),
    "absurd age": (lambda w: ["--manifest", w["bad"] / "age2.csv"], ["age2.csv", "impossible age 999"]),
    "image not found": (lambda w: ["--manifest", w["bad"] / "path.csv"], ["path.csv", "image file not found"]),
    "image is a folder": (lambda w: ["--manifest", w["bad"] / "dirpath.csv", "--cohort-root", w["bad"].parent], ["dirpath.csv", "image folder holds no DICOM files"]),
    "checkpoint not found": (lambda w: ["--checkpoint", w["root"] / "none.pt"], ["none.pt", "not found"]),
    "checkpoint garbage": (lambda w: ["--checkpoint", w["root"] / "garbage.pt"], ["garbage.pt", "cannot read checkpoint"]),
    "checkpoint truncated": (lambda w: ["--checkpoint", w["root"] / "truncated.pt"], ["truncated.pt", "cannot read checkpoint"]),
    "checkpoint label count": (lambda w: ["--checkpoint", w["root"] / "four_labels.pt"],
                               ["four_labels.pt", "weights do not match", "4 labels"]),
    "checkpoint network config": (lambda w: ["--checkpoint", w["root"] / "other_config.pt"],
                                  ["other_config.pt", "weights do not match network config"]),
    "plain state dict": (lambda w: ["--checkpoint", w["root"] / "plain.pt"], ["plain.pt", "plain state dict"]),
    "params not json": (lambda w: ["--params", "{n_samples: 3"], ["--params", "not valid JSON"]),
    "params not object": (lambda w: ["--params", "[1, 2]"], ["--params", "JSON object"]),
    "class out of range": (lambda w: ["--classes", "0,7"], ["--classes", "0..2"]),
    "class not a number": (lambda w: ["--classes", "aorta"], ["--classes", "aorta"]),
    "unknown case id": (lambda w: ["--cases", "c0,../../etc/passwd"], ["--cases", "../../etc/passwd"]),
    "unknown method": (lambda w: ["--method", "lrp"], ["--method", "lrp"]),
}


@pytest.mark.parametrize("case", list(PRECOMPUTE_CASES))
def test_precompute_rejects_bad_input_in_one_line_and_keeps_the_store(world, capfd, case):
    build, fragments = PRECOMPUTE_CASES[case]
    override = build(world)
    args = {"--manifest": world["manifest"], "--checkpoint": world["good"], "--db": world["db"], "--device": "cpu"}
    extra = []
    for key, value in zip(override[::2], override[1::2]):
        if key in args:
            args[key] = value
        else:
            extra += [key, value]
    before = fingerprint(world["store_dir"])
    rc, out, err = call_cli(["precompute", *[x for kv in args.items() for x in kv], *extra], capfd)
    assert_one_line(rc, out, err, *fragments)
    assert fingerprint(world["store_dir"]) == before


IMPORT_CASES = {
    "mass rows do not sum to 1": (["--csv", "sum.csv"], ["sum.csv", "patient 's0029'", "'heart'", "sum to 1.25"]),
    "missing mass column": (["--csv", "missing_mass.csv"], ["missing_mass.csv", "ribs_explanation_in_sternum_mass"]),
    "duplicate patient": (["--csv", "dup_patient.csv"], ["dup_patient.csv", "duplicate patient id 's0029'"]),
    "non-numeric mass": (["--csv", "text_mass.csv"], ["text_mass.csv", "non-numeric mass"]),
    "csv not found": (["--csv", "none.csv"], ["none.csv"]),
    "metadata unknown sex": (["--metadata", "meta_sex.csv"], ["meta_sex.csv", "unknown sex code 'X'"]),
    "metadata absurd age": (["--metadata", "meta_age.csv"], ["meta_age.csv", "impossible age 300"]),
    "metadata missing case_id": (["--metadata", "meta_nocase.csv"], ["meta_nocase.csv", "missing column case_id"]),
    "metadata duplicate case_id": (["--metadata", "meta_dup.csv"], ["meta_dup.csv", "duplicate case_id 's0029'"]),
    "metadata not found": (["--metadata", "none_meta.csv"], ["none_meta.csv", "file not found"]),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_rejects_bad_input_in_one_line_and_keeps_the_store(world, capfd, case):
    (key, name), fragments = IMPORT_CASES[case]
    args = {"--csv": PUBLISHED, "--db": world["db"]}
    args[key] = world["bad"] / name
    before = fingerprint(world["store_dir"])
    rc, out, err = call_cli(["import-agg2exp", *[x for kv in args.items() for x in kv]], capfd)
    assert_one_line(rc, out, err, *fragments)
    assert fingerprint(world["store_dir"]) == before


def test_analyze_rejects_bad_input_and_keeps_the_published_store(world, capfd, tmp_path):
    db = world["db"]
    before = db.read_bytes()
    rc, out, err = call_cli(["analyze", "--db", db, "--contamination", "0.9"], capfd)
    assert_one_line(rc, out, err, "--contamination")
    rc, out, err = call_cli(["analyze", "--db", db, "--run", "vg-nonexistent"], capfd)
    assert_one_line(rc, out, err, str(db), "vg-nonexistent")
    assert db.read_bytes() == before, "a rejected analysis must not republish the store"
    missing = tmp_path / "nowhere.duckdb"
    rc, out, err = call_cli(["analyze", "--db", missing], capfd)
    assert_one_line(rc, out, err, str(missing))
    assert list(tmp_path.iterdir()) == [], "a rejected analysis must not create a store"


def test_unusable_store_paths_are_one_line(world, capfd, tmp_path):
    db = tmp_path / "notastore.duckdb"
    db.write_text("this is not a DuckDB file\n")
    (tmp_path / "folder.duckdb").mkdir()
    before = fingerprint(tmp_path)
    for path, fragment in ((db, "cannot open the store"), (tmp_path / "folder.duckdb", "not a store file"),
                           (db / "inside.duckdb", "cannot open the store")):
        rc, out, err = call_cli(["import-agg2exp", "--csv", PUBLISHED, "--db", path], capfd)
        assert_one_line(rc, out, err, path.name, fragment)
        assert fingerprint(tmp_path) == before


@pytest.mark.slow
def test_real_interpreter_prints_one_line_and_exits_2(world, tmp_path):
    """``python -m agg2exp_core ...`` itself (three runs in parallel on the shared cores)."""
    w = world
    runs = {
        "duplicate case ids": (["precompute", "--manifest", w["bad"] / "dup.csv", "--checkpoint", w["good"],
                                "--db", w["db"]], ["dup.csv", "duplicate case_id 'c0'"]),
        "mass rows do not sum to 1": (["import-agg2exp", "--csv", w["bad"] / "sum.csv", "--db", w["db"]],
                                      ["sum.csv", "sum to 1.25"]),
        "unknown method": (["precompute", "--manifest", w["manifest"], "--checkpoint", w["good"], "--db", w["db"],
                            "--method", "lrp"], ["--method", "lrp"]),
    }
    before = fingerprint(w["store_dir"])
    procs = {name: subprocess.Popen([*CLI, *map(str, args)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, (args, _) in runs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert_one_line(proc.returncode, out, err, *runs[name][1])
    assert fingerprint(w["store_dir"]) == before
