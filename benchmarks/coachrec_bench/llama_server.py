"""llama.cpp's own `llama-server` with 1, 2, 4 parallel slots judging the LLM criteria (`bench scale`).

PyPI ships no `llama-server` binary, but llama-cpp-python's source distribution vendors the whole
llama.cpp tree it binds, server included. `ensure_llama_server` downloads that sdist (the version
of the installed `llama_cpp`, so server and binding run the same llama.cpp), configures it with the
CPU flags `scripts/install_llama_cpp.py` derives for this machine (no `-march=native`, no AMX) and
builds the one target, cached under `~/.cache/coachrec/llama-server-<version>/`. A few minutes per
core the first time.

`slot_rows` starts the server with `-np S` slots (continuous batching: the slots' tokens are
decoded in one batch), each slot given the same context, and judges the cases from `S` threads at
once, each with its own `OpenAICompatBackend` (one HTTP request in flight per slot). Rates are
judgments per wall second; agreement is the share of verdicts equal to those of the one-slot run
(batched arithmetic may round differently, so equality is measured, not assumed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coachrec"


class LlamaServerError(RuntimeError):
    """llama-server could not be built or started."""


def _run(cmd: Sequence[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        if subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, cwd=cwd, check=False).returncode:
            raise LlamaServerError(f"`{' '.join(cmd)}` failed; see {log}")


def ensure_llama_server(jobs: int = 2) -> Path:
    """The path of a `llama-server` built from the installed llama-cpp-python's vendored llama.cpp."""
    import llama_cpp

    version = llama_cpp.__version__
    home = CACHE / f"llama-server-{version}"
    binary = home / "llama-server"
    if binary.exists():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    log = home / "build.log"
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"llama-cpp-python=={version}", "-d", tmp], log)  # fmt: skip
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        flags = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "install_llama_cpp.py"), "--print-args"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        build = src / "build"
        _run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON",
              "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
              "-DBUILD_SHARED_LIBS=OFF", *flags], log)  # fmt: skip
        _run(["cmake", "--build", str(build), "--target", "llama-server", f"-j{jobs}"], log)
        shutil.copy2(next(build.rglob("llama-server")), binary)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    binary: Path, model: Path, slots: int, threads: int, ctx_per_slot: int, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """`llama-server` on a free loopback port with `slots` slots; (process, base URL) once healthy."""
    port = _free_port()
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
           "-c", str(ctx_per_slot * slots), "-t", str(threads), "-tb", str(threads), "--no-webui"]  # fmt: skip
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LlamaServerError(f"llama-server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise LlamaServerError(f"llama-server did not become healthy in 120 s; see {log}")


def slot_rows(
    binary: Path,
    model: Path,
    make_judge: Callable[[str], Any],
    cases: list[Any],
    slots: Sequence[int] = (1, 2, 4),
    threads: int = 2,
    ctx_per_slot: int = 2048,
) -> dict[str, Any]:
    """Judgments per second with each slot count (see the module docstring); `make_judge(url)`
    builds a judge whose LLM is the server at `url`."""
    from coachrec.llm import OpenAICompatBackend

    metrics: dict[str, Any] = {"server": str(binary), "model": model.name, "cases": len(cases), "threads": threads}
    first: dict[tuple[int, str], Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for s in slots:
            proc, url = start(binary, model, s, threads, ctx_per_slot, Path(tmp) / f"server-{s}.log")
            try:
                OpenAICompatBackend(url).complete("warm-up", max_tokens=1)
                judges = [make_judge(url) for _ in range(s)]
                parts = [list(range(len(cases)))[i::s] for i in range(s)]
                t = time.perf_counter()
                with ThreadPoolExecutor(s) as pool:
                    done = list(
                        pool.map(
                            lambda jp: jp[0].judge_here([cases[i] for i in jp[1]]), zip(judges, parts, strict=True)
                        )
                    )
                wall = time.perf_counter() - t
            finally:
                proc.terminate()
                proc.wait(30)
            labels = {(i, j.criterion): j.label for part, out in zip(parts, done, strict=True)
                      for i, case in zip(part, out, strict=True) for j in case}  # fmt: skip
            judgments = sum(len(c) for out in done for c in out)
            metrics[f"slots_{s}_judgments"] = judgments
            metrics[f"slots_{s}_judgments_per_s"] = judgments / wall
            if first is None:
                first = labels
            else:
                same = sum(labels.get(k) == v for k, v in first.items())
                metrics[f"slots_{s}_verdicts_equal_to_1_slot"] = same / max(1, len(first))
    base = metrics[f"slots_{slots[0]}_judgments_per_s"]
    for s in slots[1:]:
        metrics[f"slots_{s}_speedup"] = metrics[f"slots_{s}_judgments_per_s"] / base
    return metrics
