"""A throwaway Prometheus 2.x server for the tests, serving data back-filled with promtool."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from support.servers import free_port

INSTALL_HINT = (
    "Prometheus and promtool are required by the Prometheus collector tests and were not found "
    "on PATH. Install them (Debian: `apt-get install -y --no-install-recommends prometheus`)."
)
# Nothing to scrape and no rules: the server only answers queries about the back-filled blocks.
CONFIG = "global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\nscrape_configs: []\n"


def openmetrics_series(
    name: str, labels: Mapping[str, str], samples: Iterable[tuple[int, float]]
) -> list[str]:
    """The OpenMetrics lines of one series: (Unix seconds, value) samples in time order."""
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return [f"{name}{{{text}}} {value!r} {ts}" for ts, value in samples]


class PrometheusUnavailable(RuntimeError):
    """The binaries are missing, back-filling failed, or the server did not become ready."""


class PrometheusServer:
    """A Prometheus listening on 127.0.0.1, its TSDB in a temporary directory."""

    def __init__(self, root: Path, proc: subprocess.Popen[bytes], port: int) -> None:
        self.root = root
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        """Stop the server and delete its data."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=15)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        raise PrometheusUnavailable(INSTALL_HINT)
    return prometheus, promtool


def start_prometheus(openmetrics: str) -> PrometheusServer:
    """Back-fill the OpenMetrics text (ending in `# EOF`) with promtool and serve it."""
    prometheus, promtool = _binaries()
    root = Path(tempfile.mkdtemp(prefix="opsledger-prom-", dir="/tmp"))
    try:
        return _start(prometheus, promtool, root, openmetrics)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start(prometheus: str, promtool: str, root: Path, openmetrics: str) -> PrometheusServer:
    source, data, config = root / "data.om", root / "tsdb", root / "prometheus.yml"
    source.write_text(openmetrics)
    config.write_text(CONFIG)
    created = subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration=72h",
            str(source),
            str(data),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if created.returncode != 0:
        raise PrometheusUnavailable(f"promtool failed:\n{created.stdout}\n{created.stderr}")
    source.unlink()
    log = root / "server.log"
    last = ""
    for _ in range(5):  # another process may take the free port before the server binds it
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    # Blocks older than the retention are deleted at start: keep everything.
                    "--storage.tsdb.retention.time=36500d",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = PrometheusServer(root, proc, port)
        if _wait_ready(server, timeout=30.0):
            return server
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)
        last = log.read_text(errors="replace")[-4000:]
    raise PrometheusUnavailable(f"prometheus did not become ready:\n{last}")


def _wait_ready(server: PrometheusServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False
