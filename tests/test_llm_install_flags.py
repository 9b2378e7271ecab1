"""CMAKE_ARGS derivation for the llama-cpp-python build (scripts/install_llama_cpp.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_llama_cpp.py"

# Abbreviated /proc/cpuinfo of a Sapphire Rapids guest: AVX-512 family, AVX-VNNI and AMX.
SPR_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c avx2 bmi1 bmi2 \
avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16 avx_vnni \
amx_bf16 amx_tile amx_int8
bogomips\t: 5399.99

processor\t: 1
flags\t\t: fpu sse
"""

# An older CPU: AVX only, no AVX2/FMA/F16C.
SANDY_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx\n"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_llama_cpp", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as_dict(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("-D").split("=", 1) for a in args)


def test_sapphire_rapids_turns_on_avx512_family_but_never_amx() -> None:
    script = _script()
    flags = script.cpu_flags(SPR_CPUINFO)
    assert "amx_tile" in flags and "fpu" in flags
    args = _as_dict(script.cmake_args(flags))
    assert args["GGML_NATIVE"] == "OFF"
    for option in (
        "GGML_AVX",
        "GGML_AVX2",
        "GGML_FMA",
        "GGML_F16C",
        "GGML_AVX512",
        "GGML_AVX512_VBMI",
        "GGML_AVX512_VNNI",
        "GGML_AVX512_BF16",
        "GGML_AVX_VNNI",
    ):
        assert args[option] == "ON", option
    assert args["GGML_AMX_TILE"] == args["GGML_AMX_INT8"] == args["GGML_AMX_BF16"] == "OFF"


def test_older_cpu_gets_explicit_off_for_what_it_lacks() -> None:
    """With GGML_NATIVE=OFF ggml defaults AVX2/FMA/F16C to ON, so they must be switched off."""
    script = _script()
    args = _as_dict(script.cmake_args(script.cpu_flags(SANDY_CPUINFO)))
    assert args["GGML_AVX"] == "ON" and args["GGML_SSE42"] == "ON"
    for option in ("GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2", "GGML_AVX512", "GGML_AVX_VNNI"):
        assert args[option] == "OFF", option


def test_no_flags_line_gives_empty_set() -> None:
    assert _script().cpu_flags("processor\t: 0\n") == set()
