"""Shared fixtures: a small generated marketplace, preprocessed once per session."""

import pytest


@pytest.fixture(scope="session")
def tiny_marketplace(tmp_path_factory):
    """{"logs": GenerateResult, "data_dir": preprocessed dir} for ~3k aggregated rows."""
    from beam import preprocess
    from tfddn.generate import GenerateConfig, generate

    root = tmp_path_factory.mktemp("tiny_marketplace")
    logs = generate(GenerateConfig(out_dir=str(root / "logs"), rows=3000, targets=300,
                                   advertisers=40, publishers=20, seed=11), progress=False)
    data_dir = str(root / "data")
    preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path, "--output", data_dir])
    return {"logs": logs, "data_dir": data_dir}
