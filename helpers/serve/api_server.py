"""``lmdeploy serve api_server`` as a managed background process (start, wait until ready, stop the whole group)."""
from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from helpers.procs import start_logged, stop_group
from helpers.settings import get_settings, repo_relative
from helpers.prompts import internvl2_chat_template
from helpers.serve.pipeline import tp_executor_backend


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_LIVE_SERVERS: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _stop_live_servers():
    for server in list(_LIVE_SERVERS):
        server.stop()


class ApiServer:
    """``lmdeploy serve api_server`` as a managed background process.

    The server runs in its own process group with its output in a log file; :meth:`stop` ends
    the whole group (LMDeploy starts helper processes). Servers still running when Python exits
    are stopped too.

    Args:
        model_path: checkpoint directory (default: settings.model_path).
        port: TCP port (default: settings.api_port; 0 picks a free one).
        host: bind address (default 127.0.0.1; never all interfaces unless you say so).
        api_keys: a key or list of keys; requests without one are refused (HTTP 401).
        tp: tensor-parallel GPUs.
        session_len: max tokens of one conversation (default: settings).
        backend: "pytorch" (TurboMind is not part of this course).
        cache_max_entry_count: share of free GPU memory for the KV cache (default: settings).
        system_prompt: system message, passed as a ``--chat-template`` JSON file.
        extra_args: more command-line arguments for api_server.
        log_path: log file (default: ``<runs_dir>/api_server/api_server-<port>.log``).
        command: run this argv instead of api_server (tests use a stand-in server).
        env: extra environment variables.

    Example:
        >>> with ApiServer(model_path, port=23333, api_keys="sk-course") as srv:   # doctest: +SKIP
        ...     srv.wait_ready(timeout=300)
        ...     print(openai_chat(srv.url, "sk-course", "这是什么菜？", "photo.jpg"))
    """

    def __init__(self, model_path=None, port: int | None = None, host: str | None = None, api_keys=None, tp: int = 1,
                 session_len: int | None = None, backend: str = "pytorch", cache_max_entry_count: float | None = None,
                 system_prompt: str | None = None, extra_args=(), log_path=None, command=None, env=None,
                 settings=None):
        S = settings or get_settings()
        self.model_path = Path(model_path or S.model_path)
        self.host = host or S.server_host
        self.port = S.api_port if port is None else (port or free_port(self.host))
        self.api_keys = [api_keys] if isinstance(api_keys, str) else list(api_keys or [])
        self.log_path = Path(log_path or S.runs_dir / "api_server" / f"api_server-{self.port}.log")
        self.env = dict(env or {})
        if command is not None:
            self.command = [str(c) for c in command]
        else:
            from helpers.model_dir import runnable_dir

            # The loading rule where the checkpoint is there; a path that is not (yet) there stays as
            # written, and api_server names it when it starts.
            served = runnable_dir(self.model_path) if (self.model_path / "config.json").is_file() else self.model_path
            if backend != "pytorch":
                raise ValueError(f"backend {backend!r}: this course serves with LMDeploy's PyTorch engine only")
            self.command = [
                sys.executable, "-m", "lmdeploy", "serve", "api_server", str(served),
                "--backend", backend, "--trust-remote-code",
                "--server-name", self.host, "--server-port", str(self.port),
                "--session-len", str(session_len or S.session_len),
                "--cache-max-entry-count", str(cache_max_entry_count if cache_max_entry_count is not None
                                               else S.cache_max_entry_count),
            ]
            if tp and tp > 1:
                self.command += ["--tp", str(tp)]
                if tp_executor_backend(tp):  # no Ray here: one process per GPU (see tp_executor_backend)
                    self.command += ["--distributed-executor-backend", tp_executor_backend(tp)]
            if self.api_keys:
                self.command += ["--api-keys", *self.api_keys]
            if system_prompt:
                template_file = self.log_path.with_suffix(".chat_template.json")
                template_file.parent.mkdir(parents=True, exist_ok=True)
                internvl2_chat_template(system_prompt).to_json(str(template_file))
                self.command += ["--chat-template", str(template_file)]
            self.command += [str(a) for a in extra_args]
        self.proc = None
        self._log = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:23333`` (the OpenAI API is under ``/v1``)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def command_line(self) -> str:
        """The command as a learner reads it: ``lmdeploy serve api_server artifacts/...``.

        The process itself gets :attr:`command` (the venv's Python, absolute paths); what is shown
        names paths relative to the repository, so saved outputs do not carry one machine's folders.

        Example:
            >>> ApiServer("artifacts/models/x", port=23333).command_line  # doctest: +SKIP
            'lmdeploy serve api_server artifacts/models/x --backend pytorch ...'
        """
        argv = self.command[2:] if self.command[:2] == [sys.executable, "-m"] else self.command
        return " ".join(repo_relative(a) if os.path.isabs(a) else a for a in argv)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "ApiServer":
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        if self.running:
            return self
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        self.proc, self._log = start_logged(self.command, self.log_path, env=env)
        _LIVE_SERVERS.add(self)
        return self

    def _get(self, path: str, key: str | None, timeout: float = 5.0):
        request = urllib.request.Request(self.url + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"null")

    def wait_ready(self, timeout: float = 300.0, interval: float = 1.0) -> list:
        """Poll ``/v1/models`` until the server answers.

        Args:
            timeout: seconds to wait (LMDeploy needs ~50 s on a GPU: import, weights, Triton compile).
            interval: seconds between polls.

        Returns:
            The served model ids.

        Raises:
            RuntimeError: the process exited first (the message holds the log tail).
            TimeoutError: not ready in time (the message holds the log tail).
        """
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        key = self.api_keys[0] if self.api_keys else None
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"api_server exited with code {code} before it was ready; "
                                   f"log {self.log_path}:\n{self.logs(40)}")
            try:
                status, body = self._get("/v1/models", key)
                if status == 200:
                    return [m.get("id") for m in (body or {}).get("data", [])]
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    raise RuntimeError(f"api_server at {self.url} refused our API key (HTTP 401)") from exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"api_server at {self.url} not ready after {timeout:.0f} s; "
                                   f"log {self.log_path}:\n{self.logs(40)}")
            time.sleep(interval)

    def logs(self, tail: int = 50) -> str:
        """The last ``tail`` lines of the server log."""
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """End the server and every process it started (SIGTERM, then SIGKILL).

        Returns:
            The exit code, or None when it was never started.
        """
        if self.proc is None:
            return None
        stop_group(self.proc, timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE_SERVERS.discard(self)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"ApiServer({self.url}, {state}, log={self.log_path})"
