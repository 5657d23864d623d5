"""Process-wide settings read from ``RESTORA_*`` environment variables (and CLI flags).

Settings are an explicit object handed to whoever needs them; nothing reads the environment
behind the caller's back after construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Core settings shared by library, CLI and service."""

    model_config = SettingsConfigDict(env_prefix="RESTORA_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".cache" / "restora",
                       description="Root for models (home/models), jobs and results.")
    models: Path | None = Field(default=None, description="Extra model manifest (TOML or JSON).")
    offline: bool = Field(default=False, description="Never touch the network for models.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps.")
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads.")
    engine: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        default="auto", description="Inference engine on the CPU: auto picks the fastest one "
        "that reproduces torch float32 within the task's bound (docs/engines.md).")
    engine_cache: Path | None = Field(default=None, description="Where exported graphs are "
                                      "cached (default: home/engines).")
    torch_compile: bool = Field(default=False, description="torch.compile the torch engine.")

    # Input limits: checked from the header before any pixel is decoded.
    max_bytes: int = Field(default=50_000_000, ge=1)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_frames: int = Field(default=1000, ge=1)
    max_faces: int = Field(default=64, ge=1, description="Faces restored per image, largest first.")
    # 100 MP lets a 24 MP photo be upscaled x2 (96 MP, measured under 4 GiB peak: see
    # benchmarks/memory.py); x4 of it (384 MP) is refused up front unless this is raised.
    max_output_pixels: int = Field(
        default=100_000_000, ge=1, description="Largest result (width x height after "
        "upscaling or output_width/height); larger requests are refused before any work.")
    long_job_s: float = Field(
        default=60.0, ge=0, description="A job estimated to take at least this long is "
        "announced up front (CLI line, progress event and result 'estimate'.long).")

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def engines_dir(self) -> Path:
        return self.engine_cache if self.engine_cache is not None else self.home / "engines"


def settings_error_line(exc: ValidationError) -> str:
    """One readable line for a pydantic ValidationError of the settings (a bad ``RESTORA_*``
    variable), naming each variable and what is wrong with it."""
    return "; ".join(f"RESTORA_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                     for e in exc.errors())
