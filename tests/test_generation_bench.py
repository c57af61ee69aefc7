"""The GPU smoke script's code path, run on CPU with builtin:tiny so it is known to work before a GPU run."""

from __future__ import annotations

import pytest

from bench import gpu_smoke


def test_gpu_smoke_tiny_passes_and_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_smoke.main(["--tiny", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "SMOKE OK" in out and "smoke reproducible: True" in out
    assert "batch 1: direct median" in out and "batch 4: direct median" in out


def test_gpu_bench_without_a_cuda_device_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from bench import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("bench.gpu: no CUDA device is visible") and "--cpu-smoke" in line


def test_gpu_bench_cpu_smoke_times_eager_and_compiled_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    """bench.gpu's whole path on builtin:tiny (dynamo's eager backend stands in for inductor)."""
    from bench import gpu

    assert gpu.main(["--cpu-smoke"]) == 0
    out = capsys.readouterr().out
    assert "state ready" in out and "TFLOP per image" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert [row[0].strip() for row in rows] == ["1", "2"]
    for row in rows:
        eager, compiled = float(row[1]), float(row[2])  # s/image, both measured
        assert eager > 0 and compiled > 0


def test_the_peak_table_knows_the_cards_by_name() -> None:
    from bench.gpu import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA L40S") is None  # not an L4
    assert peak_tflops("NVIDIA GeForce RTX 4090") == 165.2
    assert peak_tflops("Tesla T4") is None
