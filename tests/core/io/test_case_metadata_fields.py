"""Any extra manifest column is case metadata: typed (numeric only when every value is a finite number),
validated as untrusted input (one line naming the file), and DICOM series add their header fields."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agg2exp_core.errors import InputError
from agg2exp_core.io.case_fields import MAX_VALUE, field_columns, manifest_fields
from agg2exp_core.io.dicom import series_fields
from agg2exp_core.io.manifest import read_manifest, read_metadata
from agg2exp_core.pipeline.case_meta import cohort_fields
from tests.support.dicom_series import write_ct_series


def _manifest(tmp_path, header: str, *rows: str):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _three(tmp_path, column: str, values: tuple[str, str, str]):
    return _manifest(tmp_path, f"case_id,image,{column}", *(f"c{i},a.nii.gz,{v}" for i, v in enumerate(values)))


def _kinds(path) -> dict[str, str]:
    fields = manifest_fields(path, read_manifest(path))
    return dict(zip(fields.name, fields.kind))


def test_known_columns_are_not_fields_and_the_rest_are():
    columns = ["case_id", "image", "label", "sex", "age", "dataset", "split", "roi:effusion", "scanner", "BMI"]
    assert field_columns(columns) == ["scanner", "BMI"]


@pytest.mark.parametrize("values, kind", [
    (("1", "2.5", "-3e1"), "numeric"),
    ((" 1 ", "", ".5"), "numeric"),            # blanks are "not recorded", spaces around a number allowed
    (("1", "NA", "2"), "categorical"),         # one non-number makes the whole column categorical
    (("1", "inf", "2"), "categorical"),        # not a finite number
    (("1", "nan", "2"), "categorical"),
    (("1", "1e999", "2"), "categorical"),      # spells a decimal, overflows to inf
    (("1_000", "2", "3"), "categorical"),      # float() would take it; a CSV number does not look like that
    (("0x10", "2", "3"), "categorical"),
    (("A", "B", "A"), "categorical"),
])
def test_a_column_is_numeric_only_when_every_value_is_a_finite_number(tmp_path, values, kind):
    assert _kinds(_three(tmp_path, "x", values)) == {"x": kind}


def test_rows_hold_text_and_number_and_skip_blanks(tmp_path):
    path = _manifest(tmp_path, "case_id,image,scanner,slice_thickness_mm,empty",
                     "c0,a.nii.gz,B, 2.5 ,", "c1,a.nii.gz,,1,", "c2,a.nii.gz,A,,")
    fields = manifest_fields(path, read_manifest(path)).set_index(["case_id", "name"])
    assert fields.loc[("c0", "slice_thickness_mm"), ["value", "number"]].tolist() == ["2.5", 2.5]
    assert fields.loc[("c0", "scanner"), ["kind", "value", "source"]].tolist() == ["categorical", "B", "manifest"]
    assert pd.isna(fields.loc[("c0", "scanner"), "number"])
    assert ("c1", "scanner") not in fields.index and ("c2", "slice_thickness_mm") not in fields.index
    assert "empty" not in set(fields.index.get_level_values("name"))   # a column without any value: no field


@pytest.mark.parametrize("header, rows, problem", [
    ("case_id,image,scanner name", ["c0,a.nii.gz,A"], "column name 'scanner name' is not a plain field name"),
    ("case_id,image,1st", ["c0,a.nii.gz,A"], "column name '1st' is not a plain field name"),
    ("case_id,image,x" + "y" * 64, ["c0,a.nii.gz,A"], "has 65 characters, more than 64"),
    ("case_id,image,Age", ["c0,a.nii.gz,40"], "columns 'age' and 'Age' differ only in letter case"),
    ("case_id,image,site,Site", ["c0,a.nii.gz,a,b"], "columns 'site' and 'Site' differ only in letter case"),
    ("case_id,image,site,site", ["c0,a.nii.gz,a,b"], "column 'site' appears twice (columns 3 and 4)"),
    ("case_id,image,site", ["c0,a.nii.gz," + "v" * (MAX_VALUE + 1)], "row 2, column site: value of 257 characters"),
    ("case_id,image,site", ['c0,a.nii.gz,"a\x07b"'], "row 2, column site: value holds control characters"),
    ("case_id,image,,site", ["c0,a.nii.gz,oops,a"], "column 3 has values but no name in the header row"),
])
def test_bad_metadata_is_one_line_naming_the_file(tmp_path, header, rows, problem):
    path = _manifest(tmp_path, header, *rows)
    with pytest.raises(InputError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value) and "\n" not in str(err.value)


def test_a_trailing_comma_is_no_field(tmp_path):
    path = _manifest(tmp_path, "case_id,image,site,", "c0,a.nii.gz,a,")
    assert manifest_fields(path, read_manifest(path)).name.unique().tolist() == ["site"]


def test_values_are_data_never_code(tmp_path):
    """A formula, SQL or markup in a cell is kept as the text it is."""
    nasty = ["=cmd|' /C calc'!A0", "'; DROP TABLE cases; --", "<script>x</script>"]
    path = _three(tmp_path, "note", tuple(f'"{v}"' for v in nasty))
    assert manifest_fields(path, read_manifest(path)).value.tolist() == nasty


def test_a_metadata_csv_for_imports_gives_fields_too(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("case_id,sex,age,scanner,bmi\np1,F,50,B,31.5\np2,M,60,A,\n")
    fields = manifest_fields(path, read_metadata(path))
    assert sorted(zip(fields.case_id, fields.name, fields.kind)) == [
        ("p1", "bmi", "numeric"), ("p1", "scanner", "categorical"), ("p2", "scanner", "categorical")]
    path.write_text("case_id,sex,scanner name\np1,F,B\n")
    with pytest.raises(InputError, match="meta.csv: column name 'scanner name'"):
        read_metadata(path)


def test_dicom_series_header_fields_land_typed(tmp_path):
    hu = np.zeros((8, 8, 4), np.int16)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    series = write_ct_series(tmp_path / "s0", hu, affine, headers={
        "Manufacturer": "ACME", "ManufacturerModelName": "Scan 64", "ConvolutionKernel": ["B30f", "SHARP"],
        "KVP": "120", "ContrastBolusAgent": "Iohexol"})
    write_ct_series(tmp_path / "s1", hu, affine)    # a series without the optional tags
    assert series_fields(series)["Manufacturer"] == "ACME"
    path = _manifest(tmp_path, "case_id,image,Manufacturer,site", "c0,s0,,north", "c1,s1,Other,south")
    cohort = read_manifest(path)
    fields = cohort_fields(path, cohort, cohort).set_index(["case_id", "name"])
    c0 = fields.loc["c0"]
    assert c0.loc["Manufacturer", ["value", "source"]].tolist() == ["ACME", "dicom"]
    assert c0.loc["ConvolutionKernel", "value"] == "B30f\\SHARP"
    assert c0.loc["KVP", ["kind", "number"]].tolist() == ["numeric", 120.0]
    assert c0.loc["SliceThickness", ["kind", "number"]].tolist() == ["numeric", 2.5]
    assert c0.loc["ContrastBolusAgent", "kind"] == "categorical"
    assert fields.loc[("c1", "Manufacturer"), ["value", "source"]].tolist() == ["Other", "manifest"]  # manifest wins
    assert ("c1", "KVP") not in fields.index and ("c1", "SliceThickness") in fields.index
    assert fields.loc[("c1", "site"), "value"] == "south"


def test_an_unreadable_series_gives_no_header_fields(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    assert series_fields(folder) == {}
