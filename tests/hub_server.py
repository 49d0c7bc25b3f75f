"""A local stand-in for the Hugging Face Hub: the endpoints huggingface_hub's upload calls.

Serves on 127.0.0.1 only.  Implements, with the Hub's status codes and error headers:

    POST /api/repos/create                              create_repo (409 when it exists)
    GET  /api/models/{repo}[/revision/{rev}]            repo_info
    POST /api/validate-yaml                             README.md metadata check
    POST /api/models/{repo}/branch/{branch}             create_branch
    POST /api/models/{repo}/preupload/{rev}             upload mode (regular / lfs) and remote oid
    POST /{repo}.git/info/lfs/objects/batch             LFS batch: an upload action only for new objects
    PUT  /lfs-upload/{repo}/{sha256}                    the LFS object (a presigned URL: no auth)
    POST /api/models/{repo}/commit/{rev}                ndjson commit
    GET  /api/whoami-v2                                 the token's user, orgs and role

Every other request needs ``Authorization: Bearer <token>`` (401 otherwise).  ``role`` is the
token's role whoami reports (``write``, ``read`` or ``fineGrained``); with ``read``, every
request that writes (create, branch, preupload, LFS batch, commit) answers 403.  A repository in
``foreign_repos`` exists for someone else: creating it answers 409, everything else 404.
``faults`` maps a route name to an HTTP status to answer instead, or to ``"drop"`` (read the
request, close the connection without a response).  ``requests`` records each request (never
its headers' values).  Speaks the LFS protocol, not Xet, so tests set ``HF_HUB_DISABLE_XET``.
Other routes (the client's own agent-registry lookup) answer 501.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".png", ".pt", ".pth", ".h5", ".msgpack", ".model")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

_REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES: Tuple[Tuple[str, str, "re.Pattern[str]"], ...] = tuple(
    (name, method, re.compile(pattern))
    for name, method, pattern in (
        ("create", "POST", r"^/api/repos/create$"),
        ("validate_yaml", "POST", r"^/api/validate-yaml$"),
        ("branch", "POST", rf"^/api/models/{_REPO}/branch/(?P<rev>[^/]+)$"),
        ("preupload", "POST", rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"),
        ("commit", "POST", rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"),
        ("repo_info", "GET", rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"),
        ("lfs_batch", "POST", rf"^/{_REPO}\.git/info/lfs/objects/batch$"),
        ("lfs_upload", "PUT", rf"^/lfs-upload/{_REPO}/(?P<oid>[0-9a-f]{{64}})$"),
        ("whoami", "GET", r"^/api/whoami-v2$"),
    )
)
WRITE_ROUTES = ("create", "branch", "preupload", "lfs_batch", "commit")


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class RequestRecord:
    method: str
    route: str
    path: str
    body_bytes: int
    authorized: bool


@dataclass
class FakeRepo:
    private: bool
    branches: Dict[str, Dict[str, bytes]] = field(default_factory=dict)
    heads: Dict[str, str] = field(default_factory=dict)
    lfs_objects: Dict[str, bytes] = field(default_factory=dict)
    commits: List[Dict[str, Any]] = field(default_factory=list)


class FakeHub:
    """The server's state and its control surface for tests."""

    def __init__(self, token: str, user: str = "test-user", orgs: Sequence[str] = (),
                 role: str = "write") -> None:
        self.token = token
        self.user = user
        self.orgs: List[str] = list(orgs)
        self.role = role
        self.repos: Dict[str, FakeRepo] = {}
        self.foreign_repos: set = set()
        self.requests: List[RequestRecord] = []
        self.create_calls: List[Dict[str, Any]] = []
        self.faults: Dict[str, Union[int, str]] = {}
        self.lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------------ inspection
    def files(self, repo_id: str, revision: str = "main") -> Dict[str, bytes]:
        with self.lock:
            return dict(self.repos[repo_id].branches[revision])

    def commits(self, repo_id: str) -> List[Dict[str, Any]]:
        with self.lock:
            return list(self.repos[repo_id].commits)

    def uploaded_lfs_bytes(self) -> int:
        """Bytes received by the LFS upload endpoint (the weights travel there)."""
        return sum(r.body_bytes for r in self.requests if r.route == "lfs_upload")

    def routes_called(self) -> List[str]:
        return [r.route for r in self.requests]

    # ------------------------------------------------------------------ state changes
    def new_commit(self, repo: FakeRepo, branch: str, message: str, changed: List[str]) -> str:
        parent = repo.heads.get(branch, "")
        oid = hashlib.sha1(f"{parent}:{message}:{len(repo.commits)}:{sorted(changed)}".encode()).hexdigest()
        repo.heads[branch] = oid
        repo.commits.append({"branch": branch, "oid": oid, "message": message, "changed": sorted(changed)})
        return oid

    def create_repo(self, repo_id: str, private: bool) -> FakeRepo:
        repo = FakeRepo(private=private)
        repo.branches["main"] = {".gitattributes": GITATTRIBUTES}
        self.repos[repo_id] = repo
        self.new_commit(repo, "main", "initial commit", [".gitattributes"])
        return repo


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # quiet, and never logs headers
        return

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: Optional[Dict[str, str]] = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: Optional[str] = None) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code} if code else None)

    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        body = self._body()
        route, params = "unknown", {}
        for name, route_method, pattern in ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                route, params = name, {k: v for k, v in match.groupdict().items() if v is not None}
                break
        hub = self.state
        authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
        with hub.lock:
            hub.requests.append(RequestRecord(method, route, path, len(body), authorized))
            fault = hub.faults.get(route)
        if fault == "drop":
            self.close_connection = True
            return
        if isinstance(fault, int):
            if fault == 404:
                return self._error(404, "Repository not found", "RepoNotFound")
            return self._error(fault, f"injected HTTP {fault}")
        if route == "unknown":
            return self._error(501, f"fake hub: no route for {method} {path}")
        if route != "lfs_upload" and not authorized:
            return self._error(401, "Invalid credentials in Authorization header")
        if route in WRITE_ROUTES and hub.role == "read":
            return self._error(403, "You don't have the rights to write with a read token", "Forbidden")
        with hub.lock:
            getattr(self, f"_do_{route}")(params, body)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    # ------------------------------------------------------------------ endpoints
    def _repo(self, params: Dict[str, str]) -> Optional[FakeRepo]:
        repo = self.state.repos.get(params["repo"])
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    def _branch(self, repo: FakeRepo, params: Dict[str, str]) -> Optional[str]:
        branch = params.get("rev", "main")
        if branch not in repo.branches:
            self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            return None
        return branch

    def _do_create(self, params: Dict[str, str], body: bytes) -> None:
        payload = json.loads(body)
        self.state.create_calls.append(payload)
        repo_id = f"{payload.get('organization') or self.state.user}/{payload['name']}"
        url = f"{self.state.url}/{repo_id}"
        if repo_id in self.state.repos or repo_id in self.state.foreign_repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.state.create_repo(repo_id, payload.get("visibility") == "private")
        self._send(200, {"url": url, "name": repo_id})

    def _do_repo_info(self, params: Dict[str, str], body: bytes) -> None:
        repo = self._repo(params)
        branch = repo and self._branch(repo, params)
        if branch is None:
            return
        self._send(200, {
            "id": params["repo"], "modelId": params["repo"], "sha": repo.heads[branch],
            "private": repo.private, "siblings": [{"rfilename": p} for p in sorted(repo.branches[branch])],
        })

    def _do_whoami(self, params: Dict[str, str], body: bytes) -> None:
        hub = self.state
        access: Dict[str, Any] = {"displayName": "test token", "role": hub.role}
        if hub.role == "fineGrained":
            access["fineGrained"] = {"canReadGatedRepos": False, "global": [], "scoped": []}
        self._send(200, {
            "type": "user", "id": "0" * 24, "name": hub.user, "fullname": hub.user,
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in hub.orgs],
            "auth": {"type": "access_token", "accessToken": access},
        })

    def _do_validate_yaml(self, params: Dict[str, str], body: bytes) -> None:
        errors = metadata_errors(json.loads(body)["content"])
        if errors:
            return self._send(400, {"errors": [{"message": e} for e in errors], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _do_branch(self, params: Dict[str, str], body: bytes) -> None:
        repo = self._repo(params)
        if repo is None:
            return
        branch = params["rev"]
        if branch in repo.branches:
            return self._error(409, f"Reference already exists: {branch}")
        repo.branches[branch] = dict(repo.branches["main"])
        repo.heads[branch] = repo.heads["main"]
        self._send(200, {})

    def _do_preupload(self, params: Dict[str, str], body: bytes) -> None:
        repo = self._repo(params)
        branch = repo and self._branch(repo, params)
        if branch is None:
            return
        files = []
        for entry in json.loads(body)["files"]:
            sample = base64.b64decode(entry["sample"])
            path = entry["path"]
            lfs = path.endswith(LFS_SUFFIXES) or entry["size"] >= LFS_MIN_SIZE or b"\0" in sample
            current = repo.branches[branch].get(path)
            oid = None
            if current is not None:
                oid = hashlib.sha256(current).hexdigest() if lfs else git_blob_sha1(current)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": files, "commitOid": repo.heads[branch]})

    def _do_lfs_batch(self, params: Dict[str, str], body: bytes) -> None:
        repo = self._repo(params)
        if repo is None:
            return
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in repo.lfs_objects:
                href = f"{self.state.url}/lfs-upload/{params['repo']}/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _do_lfs_upload(self, params: Dict[str, str], body: bytes) -> None:
        repo = self._repo(params)
        if repo is None:
            return
        if hashlib.sha256(body).hexdigest() != params["oid"]:
            return self._error(400, "content does not match its sha256")
        repo.lfs_objects[params["oid"]] = body
        self._send(200)

    def _do_commit(self, params: Dict[str, str], body: bytes) -> None:
        repo = self._repo(params)
        branch = repo and self._branch(repo, params)
        if branch is None:
            return
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = dict(repo.branches[branch])
        changed = []
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                content = repo.lfs_objects.get(value["oid"])
                if content is None:
                    return self._error(422, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = content
            elif line["key"] in ("deletedFile", "deletedFolder"):
                files.pop(value["path"], None)
            else:
                continue
            changed.append(value["path"])
        repo.branches[branch] = files
        oid = self.state.new_commit(repo, branch, header["summary"], changed)
        self._send(200, {"commitUrl": f"{self.state.url}/{params['repo']}/commit/{oid}",
                         "commitOid": oid, "success": True, "pullRequestUrl": None})


def metadata_errors(content: str) -> List[str]:
    """The Hub's model-card metadata rules that matter here (a subset of the real validator)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
    if match is None:
        return []
    try:
        metadata = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        return [f"YAML: {error}"]
    if not isinstance(metadata, dict):
        return ["metadata must be a mapping"]
    errors = []
    base = metadata.get("base_model")
    if base is not None:
        for value in [base] if isinstance(base, str) else base if isinstance(base, list) else [None]:
            if not isinstance(value, str) or not REPO_ID.match(value):
                errors.append(f'"base_model" must be Hub model ids, got {value!r}')
    for key in ("tags", "datasets", "language"):
        value = metadata.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(f'"{key}" must be a list of strings')
    for key in ("library_name", "license", "pipeline_tag"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            errors.append(f'"{key}" must be a string')
    relation = metadata.get("base_model_relation")
    if relation is not None and (relation not in ("adapter", "merge", "quantized", "finetune") or base is None):
        errors.append('"base_model_relation" must be adapter/merge/quantized/finetune and needs base_model')
    return errors
