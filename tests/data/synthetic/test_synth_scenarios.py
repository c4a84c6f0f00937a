"""Every scenario through one call and through `medfusion synth`."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.data.synthetic.scenarios import SCENARIOS, synthesize

LABELS = {"triage": "pneumonia", "cardiac": "hf_event", "neuro": "seizure", "pathology": "high_grade",
          "radiology": "suspicious", "retrieval": "abnormal"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_writes_a_manifest_with_its_label(scenario, tmp_path) -> None:
    cohort, manifest = synthesize(scenario, 12, seed=1, out=tmp_path)
    frame = pd.read_parquet(manifest)
    assert len(frame) == len(cohort) == 12
    assert LABELS[scenario] in frame.columns and "patient_id" in frame.columns and "split" in frame.columns
    assert frame["patient_id"].is_unique


def test_options_reach_the_function_that_takes_them_and_others_are_refused(tmp_path) -> None:
    cohort, manifest = synthesize("triage", 6, seed=0, out=tmp_path, image_size=64, image_formats=["png"])
    assert cohort.images.shape[-1] == 64 and (pd.read_parquet(manifest)["image_dicom"] == "").all()
    with pytest.raises(ValueError, match=r"scenario 'neuro' does not take option\(s\) \['image_size'\]"):
        synthesize("neuro", 6, seed=0, out=tmp_path / "n", image_size=64)
    with pytest.raises(ValueError, match="unknown scenario 'oncology'; available: triage, cardiac"):
        synthesize("oncology", 6, seed=0, out=tmp_path / "o")


def test_cli_synth_cardiac(tmp_path) -> None:
    result = CliRunner().invoke(app, ["synth", "--scenario", "cardiac", "--patients", "8", "--out", str(tmp_path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "manifest.parquet")) == 8
