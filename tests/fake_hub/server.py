"""``FakeHub``: an aiohttp model hub on 127.0.0.1, run in its own thread so blocking loaders can call it.

Routes (what huggingface_hub and diffusers really request):

- ``GET /api/agent-harnesses``: asked once per process for huggingface_hub's user agent (an empty list);
- ``GET /api/models/{owner}/{name}[/revision/{rev}]``: model info with ``sha`` and ``siblings`` (sizes,
  blob ids, LFS data when ``blobs=True``);
- ``GET /api/models/{owner}/{name}/tree/{rev}[/{path}]``: the file listing ``snapshot_download`` reads;
- ``HEAD|GET /{owner}/{name}/resolve/{rev}/{path}``: git files answer 200 with ``ETag``, ``X-Repo-Commit``
  and ``Content-Length``; LFS files answer 302 to the "CDN" with ``X-Linked-Etag``/``X-Linked-Size``;
- ``HEAD|GET /cdn/{sha256}`` on host ``localhost`` (another host name, as the real CDN is): the bytes,
  with ``Range`` support (206 and ``Content-Range``).

Errors carry the hub's ``X-Error-Code`` so huggingface_hub raises its real exception types: an unknown
repo is 404 ``RepoNotFound``, an unknown revision 404 ``RevisionNotFound``, a missing file 404
``EntryNotFound``, a gated repo 401 ``GatedRepo`` without a token and 403 with a token it does not accept.
Any other route is a test failure (recorded in ``failures`` and answered 500 at once, so nothing hangs).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from .repos import FakeRepo, RepoFile

_log = logging.getLogger(__name__)
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class HubRequest:
    """One request as the fake saw it; ``sent``: body bytes it wrote (fewer when it cut the connection short)."""

    method: str
    host: str
    path: str
    range: str | None
    authorization: str | None
    status: int
    sent: int = 0


class FakeHub:
    """``with FakeHub([repo, ...]) as hub:`` serves the repos at ``hub.endpoint`` until the block ends."""

    def __init__(self, repos: Iterable[FakeRepo] = ()) -> None:
        self.repos: dict[str, FakeRepo] = {repo.repo_id: repo for repo in repos}
        self.requests: list[HubRequest] = []
        self.failures: list[str] = []
        self._cuts: dict[str, int] = {}
        self._holds: dict[str, int] = {}
        self._released = threading.Event()
        self.outage: int | None = None  # an HTTP status (503) every hub request gets while set
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control, from the test's thread -----------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: FakeRepo) -> None:
        self.repos[repo.repo_id] = repo

    def cut_after(self, path: str, n_bytes: int) -> None:
        """The next body sent of the file at ``path`` (any repo) stops after ``n_bytes``: the connection drops."""
        with self._lock:
            self._cuts[path] = n_bytes

    def hold_after(self, path: str, n_bytes: int) -> None:
        """The next body sent of the file at ``path`` pauses after ``n_bytes`` until ``release()``: a slow
        download a test can look at midway."""
        with self._lock:
            self._holds[path] = n_bytes
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    def recorded(self, method: str | None = None, contains: str = "") -> list[HubRequest]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def assert_no_failures(self) -> None:
        assert not self.failures, "fake hub saw requests it does not know:\n" + "\n".join(self.failures)

    def __enter__(self) -> FakeHub:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready), name="fake-hub", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("fake hub did not start")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the port: later requests are refused, as by a hub that cannot be reached."""
        self._released.set()  # a held download must not keep the server's thread
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        self._loop = self._thread = None

    # -- the server thread ---------------------------------------------------------------------

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start(sock))
        ready.set()
        self._loop.run_forever()

    async def _start(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_get("/api/agent-harnesses", self._agent_harnesses)
        app.router.add_get("/api/models/{owner}/{name}", self._info)
        app.router.add_get("/api/models/{owner}/{name}/revision/{rev}", self._info)
        app.router.add_get("/api/models/{owner}/{name}/tree/{rev}", self._tree)
        app.router.add_get("/api/models/{owner}/{name}/tree/{rev}/{folder:.+}", self._tree)
        app.router.add_route("*", "/{owner}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_route("*", "/cdn/{sha256}", self._cdn)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, request: web.Request, status: int, sent: int = 0) -> None:
        entry = HubRequest(request.method, request.host.split(":")[0], request.path, request.headers.get("Range"),
                           request.headers.get("Authorization"), status, sent)
        with self._lock:
            self.requests.append(entry)

    def _error(self, request: web.Request, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        self._record(request, status)
        error_headers = {"X-Error-Code": code} if code else {}
        return web.json_response({"error": message}, status=status,
                                 headers={**error_headers, "X-Error-Message": message, **(headers or {})})

    def _repo(self, request: web.Request) -> tuple[FakeRepo | None, web.Response | None]:
        if self.outage is not None:
            return None, self._error(request, self.outage, "", "Service Unavailable")
        repo_id = f"{request.match_info['owner']}/{request.match_info['name']}"
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, self._error(request, 404, "RepoNotFound", "Repository not found")
        return repo, None

    def _revision(self, request: web.Request, repo: FakeRepo) -> tuple[tuple[str, dict[str, RepoFile]] | None,
                                                                         web.Response | None]:
        revision = request.match_info.get("rev", "main")
        resolved = repo.resolve(revision)
        if resolved is None:
            return None, self._error(request, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return resolved, None

    async def _agent_harnesses(self, request: web.Request) -> web.Response:
        # huggingface_hub asks once per process which coding agents exist (for its user agent): none here.
        self._record(request, 200)
        return web.json_response({"standardEnvVars": [], "harnesses": {}})

    async def _info(self, request: web.Request) -> web.Response:
        repo, error = self._repo(request)
        if repo is None:
            return error  # type: ignore[return-value]
        resolved, error = self._revision(request, repo)
        if resolved is None:
            return error  # type: ignore[return-value]
        commit, files = resolved
        with_blobs = request.query.get("blobs", "").lower() == "true"
        siblings: list[dict[str, Any]] = []
        for file in files.values():
            sibling: dict[str, Any] = {"rfilename": file.path}
            if with_blobs:
                sibling.update(size=file.size, blobId=file.git_oid)
                if file.lfs:
                    sibling["lfs"] = {"sha256": file.sha256, "size": file.size, "pointerSize": 134}
            siblings.append(sibling)
        body = {"_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit, "private": False,
                "gated": "manual" if repo.gated else False, "disabled": False, "library_name": "diffusers",
                "tags": ["diffusers"], "siblings": siblings, "lastModified": "2024-01-01T00:00:00.000Z"}
        self._record(request, 200)
        return web.json_response(body)

    async def _tree(self, request: web.Request) -> web.Response:
        repo, error = self._repo(request)
        if repo is None:
            return error  # type: ignore[return-value]
        resolved, error = self._revision(request, repo)
        if resolved is None:
            return error  # type: ignore[return-value]
        _, files = resolved
        folder = request.match_info.get("folder", "").strip("/")
        recursive = request.query.get("recursive", "").lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for file in files.values():
            if folder and not file.path.startswith(folder + "/"):
                continue
            rest = file.path[len(folder) + 1:] if folder else file.path
            if "/" in rest and not recursive:
                child = f"{folder}/{rest.split('/')[0]}" if folder else rest.split("/")[0]
                entries.setdefault(child, {"type": "directory", "oid": "0" * 40, "size": 0, "path": child})
                continue
            if recursive:  # the folders on the way are listed too
                parts = file.path.split("/")[:-1]
                for depth in range(1, len(parts) + 1):
                    child = "/".join(parts[:depth])
                    if not folder or child.startswith(folder + "/"):
                        entries.setdefault(child, {"type": "directory", "oid": "0" * 40, "size": 0, "path": child})
            entry: dict[str, Any] = {"type": "file", "oid": file.git_oid, "size": file.size, "path": file.path}
            if file.lfs:
                entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": 134}
            entries[file.path] = entry
        self._record(request, 200)
        return web.json_response(list(entries.values()))

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return await self._unknown(request)
        repo, error = self._repo(request)
        if repo is None:
            return error  # type: ignore[return-value]
        resolved, error = self._revision(request, repo)
        if resolved is None:
            return error  # type: ignore[return-value]
        commit, files = resolved
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or None
        if not repo.allows(token):
            status = 403 if token else 401
            message = f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
            return self._error(request, status, "GatedRepo", message, {"X-Repo-Commit": commit})
        file = files.get(request.match_info["path"])
        if file is None:
            return self._error(request, 404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if file.lfs:
            # Like the real hub: LFS files live on a CDN host; the redirect carries their metadata.
            location = f"http://localhost:{self.port}/cdn/{file.sha256}"
            self._record(request, 302)
            return web.Response(status=302, headers={
                **common, "Location": location, "ETag": f'"{file.git_oid}"', "X-Linked-Etag": f'"{file.sha256}"',
                "X-Linked-Size": str(file.size), "Content-Length": "0"})
        return await self._send(request, file, {**common, "ETag": f'"{file.etag}"'})

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        sha256 = request.match_info["sha256"]
        for repo in self.repos.values():
            for files in repo.revisions.values():
                for file in files.values():
                    if file.lfs and file.sha256 == sha256:
                        return await self._send(request, file, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})
        return self._error(request, 404, "EntryNotFound", "No such blob")

    async def _send(self, request: web.Request, file: RepoFile, headers: dict[str, str]) -> web.StreamResponse:
        start, end, status = 0, file.size, 200
        wanted = request.headers.get("Range")
        if wanted:
            match = _RANGE.match(wanted)
            if match is None or int(match[1]) >= file.size:
                return self._error(request, 416, "RangeNotSatisfiable", f"bad range {wanted}",
                                   {"Content-Range": f"bytes */{file.size}"})
            start = int(match[1])
            end = min(file.size, int(match[2]) + 1) if match[2] else file.size
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{file.size}"}
        response = web.StreamResponse(status=status, headers={**headers, "Content-Length": str(end - start)})
        if request.method == "HEAD":
            self._record(request, status)
            await response.prepare(request)
            return response
        with self._lock:
            cut = self._cuts.pop(file.path, None)
            hold = self._holds.pop(file.path, None)
        body = file.data[start:end]
        self._record(request, status, len(body) if cut is None else min(cut, len(body)))
        await response.prepare(request)
        if hold is not None:
            await response.write(body[:hold])
            await asyncio.get_running_loop().run_in_executor(None, self._released.wait)
            body = body[hold:]
        if cut is None:
            await response.write(body)
            await response.write_eof()
            return response
        await response.write(body[:cut])
        assert request.transport is not None
        request.transport.close()  # mid-body: the client sees the connection drop
        return response

    async def _unknown(self, request: web.Request) -> web.Response:
        line = f"{request.method} {request.path_qs}"
        _log.error("fake hub: unknown route %s", line)
        with self._lock:
            self.failures.append(line)
        self._record(request, 500)
        return web.json_response({"error": f"fake hub has no route for {line}"}, status=500,
                                 headers={"X-Error-Message": "unknown route"})
