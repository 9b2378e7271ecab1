"""Build and install llama-cpp-python from source with CPU flags that work on this machine.

Run with the project's interpreter: `.venv/bin/python scripts/install_llama_cpp.py`.

Why not the default build: llama-cpp-python is source-only on PyPI, and its default
`GGML_NATIVE=ON` build (`-march=native`) compiles AMX kernels in on CPUs that advertise AMX,
which then crash at run time on these machines. So this script turns the native build off and
switches each x86 instruction-set option ON or OFF from the CPU's own flags in /proc/cpuinfo.
Every option is set explicitly, because with `GGML_NATIVE=OFF` ggml defaults SSE4.2, AVX,
AVX2, BMI2, FMA and F16C to ON, which would produce illegal instructions on an older CPU.
AMX is always OFF.

Idempotent: if `llama_cpp` already imports at the pinned version (and the server extra imports
when requested) nothing is built. `--force` rebuilds; `--print-args` only prints CMAKE_ARGS.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"

# ggml CMake option -> /proc/cpuinfo flag that must be present for it to be ON.
X86_OPTIONS: dict[str, str] = {
    "GGML_SSE42": "sse4_2",
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_BMI2": "bmi2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}
# Never built: the AMX kernels are what crashes here.
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags(cpuinfo_text: str) -> set[str]:
    """The instruction-set flags of the first CPU listed in /proc/cpuinfo text."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return set()


def cmake_args(flags: set[str]) -> list[str]:
    """CMake -D arguments for ggml's CPU backend given the CPU's flags."""
    args = ["-DGGML_NATIVE=OFF"]
    for option, flag in X86_OPTIONS.items():
        args.append(f"-D{option}={'ON' if flag in flags else 'OFF'}")
    args.extend(f"-D{option}=OFF" for option in ALWAYS_OFF)
    return args


def derive_cmake_args(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> list[str]:
    """CMAKE_ARGS for this machine; on non-x86 machines only the native build is turned off."""
    if platform.machine().lower() not in {"x86_64", "amd64", "i686", "i386"}:
        return ["-DGGML_NATIVE=OFF"]
    try:
        text = cpuinfo_path.read_text()
    except OSError as exc:
        raise SystemExit(f"cannot read {cpuinfo_path} to derive CPU flags: {exc}") from exc
    flags = cpu_flags(text)
    if not flags:
        raise SystemExit(f"no 'flags' line in {cpuinfo_path}; cannot derive CPU flags")
    return cmake_args(flags)


def installed_ok(python: str, with_server: bool) -> bool:
    """True if `llama_cpp` imports at the pinned version (and its server, if wanted)."""
    code = f"import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == {LLAMA_CPP_VERSION!r} else 3)"
    if with_server:
        code = "import llama_cpp.server.app; " + code
    result = subprocess.run([python, "-c", code], capture_output=True)
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even if an importable build exists")
    parser.add_argument("--no-server", action="store_true", help="skip the [server] extra (OpenAI-compatible server)")
    parser.add_argument("--print-args", action="store_true", help="print CMAKE_ARGS and exit")
    opts = parser.parse_args(argv)

    args = derive_cmake_args()
    if opts.print_args:
        print(" ".join(args))
        return 0
    with_server = not opts.no_server
    # One build at a time per environment: a second run waits, then finds the build done.
    with open(Path(sys.prefix) / ".install_llama_cpp.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not opts.force and installed_ok(sys.executable, with_server):
            print(f"llama-cpp-python {LLAMA_CPP_VERSION} already importable; nothing to do (--force rebuilds)")
            return 0
        return build(args, with_server)


def build(args: list[str], with_server: bool) -> int:
    """pip-build llama-cpp-python from source with `args` as CMAKE_ARGS, then add its dependencies."""
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(args)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    spec = f"llama-cpp-python{'[server]' if with_server else ''}=={LLAMA_CPP_VERSION}"
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so a cached wheel built with other
    # flags (e.g. the crashing native build) would otherwise be reused silently.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--no-binary",
        "llama-cpp-python",
        "--force-reinstall",
        "--no-deps",
        spec,
    ]
    deps_cmd = [sys.executable, "-m", "pip", "install", spec]
    print(f"CMAKE_ARGS={env['CMAKE_ARGS']}", flush=True)
    start = time.perf_counter()
    # First build llama-cpp-python itself (forced, uncached), then let pip add its dependencies.
    subprocess.run(cmd, env=env, check=True)
    subprocess.run(deps_cmd, env=env, check=True)
    if not installed_ok(sys.executable, with_server):
        raise SystemExit("llama-cpp-python was built but does not import; see the pip output above")
    print(f"llama-cpp-python {LLAMA_CPP_VERSION} built and installed in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
