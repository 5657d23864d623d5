#!/usr/bin/env bash
# Prepares the GPU checks (issue 15, item 6) for a machine that has CUDA torch but no network and
# no ../shared beside the checkout: the wheels of Restora's dependencies such an image lacks go
# to .whl/, the shared files the GPU tests and benchmarks read to .gpu/shared/ (both ignored by
# git). Run it here, where PyPI is reachable; then run scripts/gpu_check.sh there with .whl and
# .gpu carried along (about 25 MB together).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${RESTORA_SHARED:-../shared}
python=${PYTHON:-.venv/bin/python}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
for path in /.whl/ /.gpu/; do
  grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >>"$exclude"
done

# Core dependencies missing from a CUDA image that already holds torch, numpy, OpenCV, Pillow,
# pytest, httpx, rich, typer (the device image's package list), pinned to the versions CI
# tests here so that pairs such as pydantic / pydantic-core match.
packages="pydantic pydantic-core pydantic-settings python-dotenv annotated-types
  typing-inspection fastapi starlette uvicorn python-multipart sqlalchemy alembic mako
  standardwebhooks opentelemetry-api pillow-heif rawpy psd-tools openexr"
rm -rf .whl && mkdir -p .whl
for name in $packages; do
  version=$("$python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null \
            || true)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$name${version:+==$version}"
done

rm -rf .gpu && mkdir -p .gpu/shared/conformance/photo .gpu/shared/conformance/ddcolor \
  .gpu/shared/models .gpu/shared/testdata/photos .gpu/shared/testdata/gray
cp "$shared"/conformance/*.tiny.json "$shared"/conformance/*.tiny.pth \
   "$shared"/conformance/retinaface_mobilenet0.25_facelibcfg.pth .gpu/shared/conformance/
cp "$shared"/conformance/photo/{lama,scratchunet}.tiny.{json,pth} .gpu/shared/conformance/photo/
cp "$shared"/conformance/ddcolor/{goldens.json,tiny.pth} .gpu/shared/conformance/ddcolor/
cp "$shared"/models/face_detection_yunet_2026may.onnx .gpu/shared/models/
cp "$shared"/testdata/photos/{00.jpg,02.png,06.png} .gpu/shared/testdata/photos/
cp "$shared"/testdata/gray/Hepburn01.png .gpu/shared/testdata/gray/
cp -r "$shared"/testdata/faces .gpu/shared/testdata/
du -sh .whl .gpu
echo "now, on the GPU machine (carry .whl and .gpu): bash scripts/gpu_check.sh"
