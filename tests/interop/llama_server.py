"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) as a process the
tests start, stop and start again on the same port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

MODEL_ALIAS = "qwen2.5-14b"  # the profile the worker serves; the server answers to it
API_KEY = "sk-test"
# Loading a small GGUF takes a second or two; a busy CI machine gets far more than that.
READY_DEADLINE = 180.0


class LlamaServer:
    def __init__(self, model: Path, port: int, n_ctx: int = 256) -> None:
        self.model = model
        self.port = port
        self.n_ctx = n_ctx
        self.log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
            "--model_alias", MODEL_ALIAS, "--n_ctx", str(self.n_ctx), "--host", "127.0.0.1",
            "--port", str(self.port), "--api_key", API_KEY, "--n_threads", "1",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=os.environ.copy())
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                answer = requests.get(f"{self.base_url}/models", timeout=5,
                                      headers={"Authorization": f"Bearer {API_KEY}"})
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready within {READY_DEADLINE:.0f}s:\n"
                           f"{self.log_tail()}")

    def stop(self) -> None:
        """Stop it and wait until it is gone, so its port refuses connections."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its port but reads and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def crash(self) -> None:
        """SIGKILL, as an out-of-memory kill would: the kernel closes its connections."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def unread_request_bytes(self) -> int:
        """Bytes clients sent that the server has not read yet, on its established
        connections (the rx_queue of /proc/net/tcp)."""
        total = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == self.port and fields[3] == "01":  # 01: ESTABLISHED
                total += int(fields[4].split(":")[1], 16)
        return total

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def remove_log(self) -> None:
        self.log.unlink(missing_ok=True)
