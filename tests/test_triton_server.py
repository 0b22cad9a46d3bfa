"""A real Triton Inference Server: the tritonserver binary PyTriton's wheel ships (Python backend only),
run from the environment `make triton-env` makes (.venv-triton: numpy < 2, so not this one), on
127.0.0.1, always stopped. Queried with NVIDIA's tritonclient, it must answer as `zhcls.load().predict`:

- `export --triton_repo DIR --triton_backend python` repositories of a sliding and a head_tail checkpoint,
  loaded by a plain ``tritonserver --model-repository``;
- `zhcls serve --engine triton` (PyTriton binding zhcls's predictor as a Triton model).

Skipped, with the reason, only where the Triton environment cannot be made (no PyTriton wheel for this
platform, or no package index)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import free_port
from test_serve import REPO_SRC
from test_triton_repo import policy_exports  # noqa: F401  (the fixture)
from zhcls.deploy.triton import server_environment
from zhcls.deploy.triton_repo import write_triton_repo
from zhcls.inference.loading import load

REPO = Path(REPO_SRC).parent
TESTS = REPO / "tests"


@pytest.fixture(scope="session")
def triton_python() -> Path:
    """The Triton environment's interpreter; made (as `make triton-env` does) when missing."""
    venv = Path(os.environ.get("TRITON_VENV", REPO / ".venv-triton"))
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        for packages in (["-r", str(TESTS / "triton-requirements.txt")], ["--no-deps", "-e", str(REPO)]):
            subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True, capture_output=True,
                           text=True, timeout=600)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"the Triton environment could not be made: {(e.stderr or '').strip().splitlines()[-1:]}")
    return python


def site_packages(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def triton_env(python: Path) -> dict:
    """The environment a Triton server needs to run the Triton environment's Python models: its python3
    first on PATH (the stub's embedded Python takes its packages from there, not from PYTHONPATH), its
    libpython, and the CUDA runtime PyTriton's wheel bundles (the stub links it, even on CPU)."""
    env = server_environment(dict(os.environ), str(python))
    libs = Path(site_packages(python)) / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] += os.pathsep + str(libs)
    return env


def wait_triton(base: str, model: str, process: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``model`` is loaded and ready (the server is ready earlier, while PyTriton binds models)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the Triton server exited ({process.returncode}): {process.stdout.read()[-3000:]}"
        try:
            if httpx.get(f"{base}/v2/models/{model}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("Triton not ready in time")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(python: Path, base: str, model: str, outputs: str, texts: list[str]) -> list[dict]:
    r = subprocess.run([str(python), str(TESTS / "triton_query.py"), base.removeprefix("http://"), model, outputs],
                       input=json.dumps(texts), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def exports(policy_exports):  # noqa: F811  (the fixture imported above)
    """The export folders of test_triton_repo's checkpoints that store the sliding and the head_tail policy."""
    return {policy: folder for policy, (_, folder) in policy_exports.items()}


@pytest.fixture(scope="module")
def texts(shared):
    """Dev texts, and long ones (several windows of a 64-token model): where the policies differ."""
    lines = (shared / "data" / "kuake_qic" / "dev.txt").read_text(encoding="utf-8").splitlines()[:60]
    short = [line.rsplit("\t", 1)[0] for line in lines]
    return short[:20] + ["".join(short[i:i + 8]) for i in range(0, 40, 4)]


def test_exported_python_repository_in_tritonserver_answers_as_predict(triton_python, exports, texts, tmp_path):
    repos = []
    for policy, folder in exports.items():
        repos.append(write_triton_repo(folder, tmp_path / f"repo_{policy}", backend="python", max_batch_size=16,
                                       max_delay_ms=5))
    # tritonserver finds the Python backend's stub in the backend folder: PyTriton's wheel keeps one per
    # Python version beside it, and copies the right one in at start-up, as done here.
    dist = Path(site_packages(triton_python)) / "pytriton" / "tritonserver"
    backends = shutil.copytree(dist / "backends", tmp_path / "backends")
    version = subprocess.run([str(triton_python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    http, grpc, metrics = free_port(), free_port(), free_port()
    command = [str(dist / "bin" / "tritonserver"), "--backend-directory", str(backends),
               "--http-address", "127.0.0.1", "--http-port", str(http), "--grpc-address", "127.0.0.1",
               "--grpc-port", str(grpc), "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics),
               *[f"--model-repository={r}" for r in repos]]
    process = subprocess.Popen(command, env=triton_env(triton_python), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{http}"
    try:
        for folder in exports.values():
            wait_triton(base, folder.name, process)
        for policy, folder in exports.items():
            expected = load(folder, backend="onnx", device="cpu").predict(texts)
            answers = query(triton_python, base, folder.name, "label,score", texts)
            assert [a["label"] for a in answers] == [e["label"] for e in expected], policy
            assert [a["score"] for a in answers] == pytest.approx([e["score"] for e in expected], abs=1e-5), policy
    finally:
        stop(process)


def test_serve_engine_triton_answers_as_predict(triton_python, exports, texts):
    folder = exports["sliding"]
    port = free_port()
    process = subprocess.Popen([str(triton_python), "-m", "zhcls", "-q", "serve", "--engine", "triton", "--params_path",
                                str(folder), "--port", str(port), "--max_batch_size", "16", "--threads", "1"],
                               env=triton_env(triton_python), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_triton(base, folder.name, process)
        answers = query(triton_python, base, folder.name, "result", texts)
        expected = load(folder, backend="onnx", device="cpu").predict(texts)
        got = [json.loads(a["result"]) for a in answers]
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    finally:
        stop(process)
    assert process.returncode == 0, process.stdout.read()[-3000:]
