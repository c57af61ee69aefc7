"""A fake model hub on loopback that the real huggingface_hub (and through it diffusers) downloads from.

Usage (``tests/test_hub_download.py`` has the fixture)::

    repo = FakeRepo.of("tiny/sd", {"main": read_folder(saved_pipeline), "v2": other_files})
    with FakeHub([repo]) as hub:
        point_hub_at(monkeypatch, hub.endpoint, tmp_path)   # patches huggingface_hub.constants
        hub.cut_after("unet/diffusion_pytorch_model.safetensors", 1_000_000)  # one-shot
        load_model("m", ModelConfig(source="tiny/sd"), executor)
        assert hub.recorded("GET", "/cdn/")[-1].range == "bytes=983040-"
    hub.assert_no_failures()

``server.py`` lists the routes and the errors (gated 401/403, unknown repo or revision 404); any
other request is recorded in ``failures`` and answered 500 at once, so a test fails instead of
hanging. ``ldm.py`` writes a diffusers SD1 pipeline as an original-format single-file checkpoint.
"""

from .patching import go_offline, point_hub_at
from .repos import NOISE_FILES, FakeRepo, RepoFile, read_folder
from .server import FakeHub, HubRequest

__all__ = ["NOISE_FILES", "FakeHub", "FakeRepo", "HubRequest", "RepoFile", "go_offline", "point_hub_at",
           "read_folder"]
