"""The GPU smoke script's code path, run on CPU with builtin:tiny so it is known to work before a GPU run."""

from __future__ import annotations

import pytest

from bench import gpu_smoke


def test_gpu_smoke_tiny_passes_and_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_smoke.main(["--tiny", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "SMOKE OK" in out and "smoke reproducible: True" in out
    assert "batch 1: direct median" in out and "batch 4: direct median" in out
