"""Model files are programs (issue #21): a pickle payload in an nnU-Net checkpoint or a plain
state dict, and a bundle config's ``$`` expressions or foreign ``_target_``s run nothing
without ``trust_code`` / ``--trust-model-code``: one line naming the file, no marker written.
With the flag they load; the common nnU-Net checkpoint (numpy scalars, a torch.device) needs none.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
import model_folders as mf  # noqa: E402

from agg2exp_core.cli import main  # noqa: E402
from agg2exp_core.errors import InputError  # noqa: E402
from agg2exp_core.models.sources import ModelSpec, load_model  # noqa: E402

torch.set_num_threads(1)


def refused(path, marker: Path, file_name: str, **options) -> str:
    with pytest.raises(InputError) as err:
        load_model(path, device="cpu", **options)
    message = str(err.value)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in message and file_name in message and "--trust-model-code" in message, message
    return message


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory):
    pytest.importorskip("nnunetv2")
    return mf.write_nnunet(tmp_path_factory.mktemp("trust") / "Dataset999")


def copy_folder(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


def test_a_pickle_payload_in_an_nnunet_checkpoint_runs_only_with_trust(nnunet_folder, tmp_path):
    marker = tmp_path / "marker"
    folder = copy_folder(nnunet_folder, tmp_path / "poisoned")
    mf.poison_nnunet_checkpoint(folder, marker)
    message = refused(folder, marker, "checkpoint_final.pth")
    assert "posix.system" in message
    load_model(folder, device="cpu", trust_code=True)
    assert marker.exists()  # trusted: the file's own code ran, as the user asked


def test_an_nnunet_checkpoint_as_the_trainer_writes_it_loads_without_trust(nnunet_folder, tmp_path):
    folder = copy_folder(nnunet_folder, tmp_path / "trained")
    mf.nnunet_checkpoint_like_a_trained_one(folder)
    plain = load_model(nnunet_folder, device="cpu")
    model = load_model(folder, device="cpu")
    x = torch.randn(1, 1, 12, 12, 8)
    assert torch.equal(model.network(x), plain.network(x))
    assert model.network.mirror_axes == ()


def test_plans_naming_a_foreign_architecture_are_refused_without_trust(nnunet_folder, tmp_path):
    import json

    folder = copy_folder(nnunet_folder, tmp_path / "foreign")
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    message = refused(folder, tmp_path / "none", "plans.json")
    assert "'os.system' is not a torch.nn class" in message


def test_a_pickled_state_dict_is_refused_without_trust(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": mf.tiny_unet().state_dict(), "payload": mf.MarkerPayload(marker)}, path)
    refused(path, marker, "weights.pt")
    with pytest.raises(InputError, match="plain state dict: give"):  # read (and run) only when trusted
        load_model(path, device="cpu", trust_code=True)
    assert marker.exists()


@pytest.mark.parametrize("how, named", [("expression", "network_def::channels is a $ expression"),
                                        ("target", "_target_ 'subprocess.call' is not a MONAI"),
                                        ("reference", "shell: _target_ 'os.system'")])
def test_bundle_configs_that_run_code_are_refused_without_trust(tmp_path, how, named):
    marker = tmp_path / "marker"
    bundle = mf.write_bundle(tmp_path / "bundle")
    mf.poison_bundle(bundle, marker, how)
    assert named in refused(bundle, marker, "inference.json")
    spec = ModelSpec(bundle, trust_code=True)  # the flag travels to worker processes too
    try:
        load_model(spec, device="cpu")
    except InputError:
        pass  # the trusted config ran; whether it then builds a model is the bundle's business
    assert marker.exists()


def test_the_cli_refuses_in_one_line_and_accepts_the_flag(tmp_path, capsys):
    marker = tmp_path / "marker"
    manifest = mf.write_manifest(tmp_path / "cohort", n=1)
    bundle = mf.write_bundle(tmp_path / "bundle")
    mf.poison_bundle(bundle, marker, "expression")
    assert main(["predict", "--manifest", str(manifest), "--model", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "inference.json" in err and not marker.exists()
    assert main(["predict", "--manifest", str(manifest), "--model", str(bundle), "--trust-model-code"]) == 0
    assert marker.exists()


def test_a_plain_bundle_loads_without_trust_and_equals_the_trusted_load(tmp_path):
    bundle = mf.write_bundle(tmp_path / "bundle")
    plain, trusted = load_model(bundle, device="cpu"), load_model(bundle, device="cpu", trust_code=True)
    x = torch.randn(1, 1, 12, 12, 12)
    assert torch.equal(plain.network(x), trusted.network(x))
    assert plain.window == trusted.window and plain.preprocessing.description == trusted.preprocessing.description


def test_random_bytes_are_an_unreadable_checkpoint_not_a_request_for_trust(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InputError) as err:
        load_model(path, device="cpu")
    assert "cannot read checkpoint" in str(err.value) and "--trust-model-code" not in str(err.value)
