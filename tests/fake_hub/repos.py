"""What the fake model hub serves: repos of files at named revisions, gated or open."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Text files live in git; everything else in LFS (served through the "CDN" redirect, like the real hub).
_GIT_SUFFIXES = (".json", ".txt", ".md", ".gitattributes")


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return not self.path.endswith(_GIT_SUFFIXES)

    @property
    def etag(self) -> str:
        # The hub's ETag is the LFS sha256 for LFS files, the git blob id otherwise.
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class FakeRepo:
    """One model repo: ``revisions`` maps a branch name to its files (path -> bytes)."""

    repo_id: str
    revisions: dict[str, dict[str, RepoFile]]
    gated: bool = False
    accepted_tokens: frozenset[str] = frozenset()

    @classmethod
    def of(cls, repo_id: str, revisions: Mapping[str, Mapping[str, bytes]], *, gated: bool = False,
           accepted_tokens: frozenset[str] = frozenset()) -> FakeRepo:
        return cls(repo_id, {rev: {path: RepoFile(path, data) for path, data in files.items()}
                             for rev, files in revisions.items()}, gated, accepted_tokens)

    def commit(self, branch: str) -> str:
        return hashlib.sha1(f"{self.repo_id}@{branch}".encode()).hexdigest()

    def resolve(self, revision: str) -> tuple[str, dict[str, RepoFile]] | None:
        """(commit, files) for a branch name or a commit id; None when there is no such revision."""
        if revision in self.revisions:
            return self.commit(revision), self.revisions[revision]
        if _COMMIT.match(revision):
            for branch, files in self.revisions.items():
                if self.commit(branch) == revision:
                    return revision, files
        return None

    def allows(self, token: str | None) -> bool:
        return not self.gated or token in self.accepted_tokens


def read_folder(folder: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under ``folder`` as repo paths (``prefix`` + the relative path with '/')."""
    return {prefix + path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# Files a real pipeline repo also carries and that a download must leave alone.
NOISE_FILES: dict[str, bytes] = {
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "README.md": b"---\nlicense: other\n---\n# tiny\n",
    "v1-5-pruned-emaonly.safetensors": b"\0" * 4096,  # a root single-file checkpoint
    "v1-5-pruned.ckpt": b"\0" * 4096,
    "unet/diffusion_pytorch_model.bin": b"\0" * 2048,  # pickled weights when safetensors exist
    "unet/diffusion_flax_model.msgpack": b"\0" * 2048,
    "vae_encoder/model.onnx": b"\0" * 1024,  # a folder that is not a component
    "vae_encoder/config.json": b"{}",
}
