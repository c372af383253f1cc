import os
from pathlib import Path

import pytest
from hypothesis import settings

from helpers import SENTENCES



@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A tiny directory corpus: train/valid/test.txt, one sequence per line."""
    root = tmp_path / "corpus"
    root.mkdir()
    train = SENTENCES[:4] * 5
    (root / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (root / "valid.txt").write_text("the cat sat\nthe dog ran\n", encoding="utf-8")
    (root / "test.txt").write_text("a dog sat on the mat\nthe bird sang\n", encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch, tmp_path):
    """Tests never write to the developer's own tracking store."""
    for name in ("MLFLOW_TRACKING_URI", "SEQLAB_PIPELINE_KEY", "DVC_ROOT", "DVC_EXP_NAME"):
        # set, then delete: monkeypatch then restores the original even when MLflow sets it meanwhile
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# property tests: no example database in the checkout; in CI the same examples on every run
settings.register_profile("seqlab", database=None, deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("seqlab")
