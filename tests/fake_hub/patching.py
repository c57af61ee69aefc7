"""Point huggingface_hub (and through it diffusers and transformers) at a fake hub, for one test.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and its cache paths into
``huggingface_hub.constants`` when it is imported, and every download reads them from there at call
time; so the test patches those constants (monkeypatch restores them) instead of the environment.
The rest of the suite stays offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

# The tiny model's files are smaller than one real download chunk (10 MB); smaller chunks give byte
# progress within a file and let a cut connection leave a partial file to resume.
CHUNK_BYTES = 64 * 1024


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Downloads go to ``endpoint``; the default cache, token file and registry cache live under ``home``."""
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK_BYTES)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if HF_HUB_OFFLINE=1 had been set before huggingface_hub was imported."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
