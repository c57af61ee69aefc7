"""Downloading a diffusers pipeline (or one model, such as the safety checker) from the model hub: only the
files it needs, with byte progress.

``fetch_pipeline`` lists the repo with file sizes, picks model_index.json, each component's config and
tokenizer files and one set of weights per component (``.safetensors`` before ``.bin``, the asked
``variant`` before the plain weights; never root checkpoints, ONNX, Flax or OpenVINO files), downloads
them one by one with huggingface_hub into its cache (``cache_dir``, else ``HF_HUB_CACHE``/``HF_HOME``),
and returns the snapshot folder for ``from_pretrained``. Byte counts come from the real transfer
(huggingface_hub's progress-bar hook); files already cached count as done at once. A connection cut
mid-file is resumed by huggingface_hub with a Range request; a process killed mid-file starts that
file again (huggingface_hub keeps no partial file between attempts).

Offline (``HF_HUB_OFFLINE``) or when the hub cannot be reached, a snapshot that is fully cached loads
without the network; huggingface_hub checks completeness against the file listing it cached.

Every failure is a ``ModelLoadError`` with one line (see ``explain_failure``): a gated repo, a missing repo or
revision, an unreachable hub, a full disk, any other hub answer.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_cached_repo_tree,
    hf_hub_download,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

from generation.errors import ImagineError, ModelLoadError
from generation.warmup import DownloadCallback, DownloadProgress

_log = logging.getLogger(__name__)

MODEL_INDEX = "model_index.json"
# What diffusers and transformers load: other ".bin" files (OpenVINO) are not PyTorch weights.
_WEIGHT_BASES = frozenset({"diffusion_pytorch_model", "model", "pytorch_model"})
# name[-00001-of-00002][.variant][-00001-of-00002].ext: writers put the shard number on either side of the variant.
_WEIGHT = re.compile(
    r"^(?P<base>[^./-]+)(?:-\d+-of-\d+)?(?:\.(?P<variant>[^./-]+))?(?:-\d+-of-\d+)?\.(?P<ext>safetensors|bin)$")
_INDEX = re.compile(r"^(?P<base>[^./]+)\.(?P<ext>safetensors|bin)\.index(?:\.(?P<variant>[^./]+))?\.json$")
# Configs, tokenizer vocabularies and merges, sentencepiece and tiktoken models.
_CONFIG_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")


ProgressCallback = DownloadCallback


def fetch_pipeline(
    repo_id: str,
    *,
    revision: str | None,
    variant: str | None,
    token: str | None,
    cache_dir: str | None,
    on_progress: ProgressCallback | None,
    skip: Collection[str] = (),
) -> Path:
    """The local snapshot folder of ``repo_id`` with what its pipeline needs; ``skip`` names unused components."""
    def choose(sizes: Mapping[str, int], local: Callable[[str], str]) -> list[str]:
        if MODEL_INDEX not in sizes:
            raise ModelLoadError(
                f"hub repo {repo_id!r} is not a diffusers pipeline (it has no {MODEL_INDEX}); for a single "
                f".safetensors checkpoint, download it and use its path as the source"
            )
        return choose_files(sizes, _read_index(local(MODEL_INDEX)), variant=variant, skip=skip, repo_id=repo_id)

    return _fetch(repo_id, revision, token, cache_dir, on_progress, choose)


def fetch_model(
    repo_id: str, *, revision: str | None, token: str | None, cache_dir: str | None,
    on_progress: ProgressCallback | None,
) -> Path:
    """The local snapshot folder of a single transformers model repo (the safety checker's): its configs and one
    weight set at the top of the repo, with the same progress, cache and offline behaviour as pipelines."""
    def choose(sizes: Mapping[str, int], _local: Callable[[str], str]) -> list[str]:
        return choose_model_files(sizes, repo_id=repo_id)

    return _fetch(repo_id, revision, token, cache_dir, on_progress, choose)


# Which files of a repo to fetch, given every file's size and a way to read one of them locally.
_Chooser = Callable[[Mapping[str, int], Callable[[str], str]], list[str]]


def _fetch(repo_id: str, revision: str | None, token: str | None, cache_dir: str | None,
           on_progress: ProgressCallback | None, choose: _Chooser) -> Path:
    cache = str(Path(cache_dir).expanduser()) if cache_dir else None
    try:
        if constants.is_offline_mode():
            return _from_cache(repo_id, revision, cache, choose, on_progress)
        try:
            info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, token=token)
        except (httpx2.TransportError, OfflineModeIsEnabled):
            # The hub cannot be reached: a complete cached snapshot still serves.
            _log.info("model hub unreachable; looking for %s in the local cache", repo_id)
            return _from_cache(repo_id, revision, cache, choose, on_progress)
        except HfHubHTTPError as exc:
            if not _is_outage(exc):
                raise
            # The hub is down or busy: a cached model still starts; otherwise its own answer explains.
            _log.warning("model hub answered %s; looking for %s in the local cache", exc.response.status_code, repo_id)
            try:
                return _from_cache(repo_id, revision, cache, choose, on_progress)
            except LocalEntryNotFoundError:
                raise exc from None
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or ()}
        commit = info.sha or revision

        def local(path: str) -> str:
            return hf_hub_download(repo_id, path, revision=commit, cache_dir=cache, token=token)

        chosen = choose(sizes, local)
        _download(repo_id, commit, chosen, sizes, token, cache, on_progress)
        # Records revision -> commit and the file listing, so an offline start can check the snapshot is whole.
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, token=token,
                                   allow_patterns=chosen, tqdm_class=_QuietBar)
        return Path(folder)
    except ImagineError:
        raise  # ours already reads well; one raised by on_progress (a cancel) passes through as it is
    except Exception as exc:
        reason = explain_failure(exc, repo_id=repo_id, revision=revision, cache_dir=cache)
        raise ModelLoadError(reason) from exc


def _is_outage(exc: HfHubHTTPError) -> bool:
    return exc.response is not None and (exc.response.status_code >= 500 or exc.response.status_code == 429)


def choose_files(
    sizes: Mapping[str, int], index: Mapping[str, Any], *, variant: str | None, skip: Collection[str] = (),
    repo_id: str = "the repo",
) -> list[str]:
    """The files a pipeline folder needs, in download order: configs first, weights, then model_index.json."""
    configs: list[str] = []
    weights: list[str] = []
    for component in sorted(_components(index)):
        if component in skip:
            continue
        children = sorted(path.split("/", 1)[1] for path in sizes if path.startswith(f"{component}/"))
        children = [name for name in children if "/" not in name]  # direct children only
        weight_sets = _weight_sets(children)
        configs += [f"{component}/{name}" for name in children
                    if name.endswith(_CONFIG_SUFFIXES) and not _INDEX.match(name)]
        if weight_sets:
            weights += [f"{component}/{name}" for name in _pick(weight_sets, variant, component, repo_id)]
    return [*configs, *weights, MODEL_INDEX]


def choose_model_files(sizes: Mapping[str, int], *, repo_id: str = "the repo") -> list[str]:
    """The files of a single model at the top of a repo: its configs (the model's, the preprocessor's), then one
    weight set (``.safetensors`` before ``.bin``; never ONNX, Flax or TF files, nor anything in subfolders)."""
    top = sorted(path for path in sizes if "/" not in path)
    configs = [name for name in top if name.endswith(_CONFIG_SUFFIXES) and not _INDEX.match(name)]
    weight_sets = _weight_sets(top)
    if not weight_sets:
        raise ModelLoadError(f"hub repo {repo_id!r} has no PyTorch weights at its top (model.safetensors or "
                             "pytorch_model.bin)")
    return [*configs, *_pick(weight_sets, None, "model", repo_id)]


def _components(index: Mapping[str, Any]) -> list[str]:
    # model_index.json maps each component to [library, class]; [null, null] means "not part of this pipeline".
    return [name for name, value in index.items()
            if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[0] is not None]


def _weight_sets(names: list[str]) -> dict[tuple[str | None, str], list[str]]:
    """Weight files grouped by (variant, format); a sharded set carries its index file."""
    sets: dict[tuple[str | None, str], list[str]] = {}
    for name in names:
        match = _WEIGHT.match(name) or _INDEX.match(name)
        if match and match["base"] in _WEIGHT_BASES:
            sets.setdefault((match["variant"], match["ext"]), []).append(name)
    # An index alone (its shards missing) is no weight set.
    return {key: files for key, files in sets.items() if any(_WEIGHT.match(name) for name in files)}


def _pick(
    sets: dict[tuple[str | None, str], list[str]], variant: str | None, component: str, repo_id: str
) -> list[str]:
    order: list[tuple[str | None, str]] = [(variant, "safetensors"), (variant, "bin")] if variant else []
    order += [(None, "safetensors"), (None, "bin")]
    for key in order:
        if key in sets:
            return sets[key]
    found = sorted({found_variant for found_variant, _ in sets if found_variant})
    raise ModelLoadError(
        f"hub repo {repo_id!r}: component {component} has weights only for variant(s) {', '.join(found)}; "
        f"set variant to one of them"
    )


def _read_index(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ModelLoadError(f"{MODEL_INDEX} is not a JSON object")
    return data


def _from_cache(
    repo_id: str, revision: str | None, cache: str | None, choose: _Chooser, on_progress: ProgressCallback | None,
) -> Path:
    """The cached snapshot, when every file that ``choose`` picks is there (no network)."""
    def local(path: str) -> str:
        found = try_to_load_from_cache(repo_id, path, cache_dir=cache, revision=revision)
        if not isinstance(found, str):
            raise LocalEntryNotFoundError(f"{repo_id} is not in the local cache")
        return found

    try:
        tree = get_cached_repo_tree(repo_id, revision=revision, cache_dir=cache)
    except CachedRepoTreeNotFoundError as exc:
        raise LocalEntryNotFoundError(f"{repo_id} has no cached file listing") from exc
    listing = {entry.path: entry.size for entry in tree}
    chosen = choose(listing, local)
    # Raises IncompleteSnapshotError (a LocalEntryNotFoundError) when a chosen file is missing.
    folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=chosen,
                                    local_files_only=True, tqdm_class=_QuietBar))
    total = sum(listing[path] for path in chosen)
    if on_progress is not None:
        on_progress(DownloadProgress(total, total))
    return folder


def _download(
    repo_id: str, commit: str | None, chosen: list[str], sizes: Mapping[str, int], token: str | None,
    cache: str | None, on_progress: ProgressCallback | None,
) -> None:
    tracker = _Tracker(sum(sizes[path] for path in chosen), on_progress)
    pending = []
    for path in chosen:
        if isinstance(try_to_load_from_cache(repo_id, path, cache_dir=cache, revision=commit), str):
            tracker.done_with(sizes[path])
        else:
            pending.append(path)
    _log.info("downloading %d of %d files of %s (%d of %d bytes) into %s", len(pending), len(chosen), repo_id,
              tracker.total - tracker.finished, tracker.total, cache or constants.HF_HUB_CACHE)
    tracker.report()
    for path in pending:
        tracker.start(path, sizes[path])
        # huggingface_hub builds its progress bar as tqdm_class(total=, initial=, ...): ours feeds the tracker.
        bar = functools.partial(_FileBar, tracker)
        hf_hub_download(repo_id, path, revision=commit, cache_dir=cache, token=token, tqdm_class=cast(Any, bar))
        tracker.done_with(sizes[path])
        tracker.report()


class _Tracker:
    """Bytes of the finished files plus those of the file in flight; reports only forward moves."""

    def __init__(self, total: int, on_progress: ProgressCallback | None) -> None:
        self.total, self._on_progress = total, on_progress
        self.finished = 0
        self._file: str | None = None
        self._file_size = self._file_done = 0
        self._reported = -1

    def start(self, path: str, size: int) -> None:
        self._file, self._file_size, self._file_done = path, size, 0

    def done_with(self, size: int) -> None:
        self.finished += size
        self._file_size = self._file_done = 0

    def at(self, position: int) -> None:
        # A server that ignores Range makes huggingface_hub count back: clamp, the report never goes back.
        self._file_done = max(0, min(position, self._file_size))
        self.report()

    def report(self) -> None:
        done = min(self.total, self.finished + self._file_done)
        if done > self._reported:
            self._reported = done
            if self._on_progress is not None:
                self._on_progress(DownloadProgress(done, self.total, self._file))


class _FileBar:
    """What huggingface_hub's file download uses of a tqdm bar: a context manager with ``update``.

    huggingface_hub keeps one bar across its retries of a file, so the count is the position in the file."""

    def __init__(self, tracker: _Tracker, *_args: Any, initial: int | None = 0, **_kwargs: Any) -> None:
        self._tracker, self._position = tracker, int(initial or 0)
        tracker.at(self._position)

    def __enter__(self) -> _FileBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def update(self, n: float | None = 1) -> None:
        self._position += int(n or 0)
        self._tracker.at(self._position)

    def close(self) -> None:
        return None


class _QuietBar(hf_tqdm):
    """huggingface_hub's own bars, never drawn: this module reports progress through ``on_progress``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # Python's own rule: an explicit cause, else the implicit context unless "from None" hid it.
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def is_hub_failure(exc: BaseException) -> bool:
    """Whether the model hub (an answer, the network, the offline switch or the cache) caused ``exc``."""
    hub_errors = (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, httpx2.TransportError)
    return any(isinstance(error, hub_errors) for error in _causes(exc))


def explain_failure(exc: BaseException, *, repo_id: str, revision: str | None, cache_dir: str | None) -> str:
    """One line for people: what went wrong and what to do, never a traceback or a wall of hub text."""
    rev = revision or "main"
    cache = cache_dir or constants.HF_HUB_CACHE
    chain = list(_causes(exc))
    for error in chain:
        if isinstance(error, GatedRepoError):
            # 401: no token was sent; 403: one was, and it has no access (licence not accepted, wrong account).
            sent = error.response is not None and error.response.status_code == 403
            refused = " (the access token sent was refused)" if sent else ""
            return (f"hub repo {repo_id!r} is gated{refused}: accept its licence on the model hub with your "
                    f"account, then set HF_TOKEN to an access token of that account")
        if isinstance(error, RevisionNotFoundError):
            return f"hub repo {repo_id!r} has no revision {rev!r}; check the model's revision setting"
        if isinstance(error, RepositoryNotFoundError):
            return (f"no hub repo {repo_id!r} (or it is private: set HF_TOKEN to an access token that can "
                    f"read it); check the model's source")
        if isinstance(error, RemoteEntryNotFoundError):
            return f"hub repo {repo_id!r} revision {rev!r} lacks a file the pipeline needs; check its files"
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return (f"disk full while downloading hub repo {repo_id!r} into {cache}: free space there, or set "
                    f"models.cache_dir (or HF_HOME) to a disk with room")
    if any(isinstance(error, (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError,
                              ConnectionError, TimeoutError)) for error in chain):
        offline = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "HF_HUB_OFFLINE is not set"
        return (f"cannot reach the model hub at {constants.ENDPOINT} ({offline}) and hub repo {repo_id!r} "
                f"revision {rev!r} is not fully in the local cache {cache}")
    for error in chain:
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            return (f"the model hub answered HTTP {error.response.status_code} for hub repo {repo_id!r}; "
                    f"try again later")
    lines = str(exc).strip().splitlines()
    return f"cannot download hub repo {repo_id!r}: {lines[0] if lines else type(exc).__name__}"
