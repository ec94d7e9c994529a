"""Fixtures for the Beam preprocessing tests (helpers live in beam_test_utils.py)."""

import pytest
from beam_test_utils import write_spec


@pytest.fixture
def run_preprocess(tmp_path):
    """Runs `beam.preprocess.run` on one input; returns (metadata, output dir)."""
    from beam import preprocess

    def _run(input_path, spec_dict, *extra, name="out"):
        spec_path = write_spec(tmp_path / f"{name}_spec.json", spec_dict)
        output = str(tmp_path / name)
        metadata = preprocess.run(["--input", str(input_path), "--spec", spec_path,
                                   "--out_dir", output, *extra])
        return metadata, output

    return _run
