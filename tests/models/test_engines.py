"""Engines: ONNX Runtime and OpenVINO against torch float32 on the tiny conformance weights,
the on-disk export cache, RESTORA_ENGINE and the fallback when a package is missing.

Exports are cached in one folder for the whole module, so each tiny graph is exported once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, shared_path
from tiny_models import write_tiny_manifest

from restora.config import Settings
from restora.models.engines import (STREAM, MIXED, ExportCache, OneAtATime, coarse_tiers,
                                    policy_for, settle_compiled, split_bf16)
from restora.models.nets import GFPGANRestorer, InputSpec
from restora.models.runtime import Runtime

FAST = ("onnxruntime", "openvino")
NETS = ("tiny-gfpgan", "tiny-codeformer", "tiny-parsenet", "tiny-realesrgan-x2",
        "retinaface-mobilenet0.25-facelibcfg")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("engines")
    return write_tiny_manifest(tmp), tmp / "engine-cache"


def make(setup: tuple[Path, Path], engine: str, home: Path | None = None, amx: bool = False,
         **kw: object) -> Runtime:
    manifest, cache = setup
    settings = Settings(home=home or cache.parent / "home", models=manifest, engine_cache=cache,
                        **kw)
    return runtime(settings, engine, amx)


def runtime(settings: Settings, engine: str, amx: bool = False) -> Runtime:
    """A CPU runtime whose ``auto`` uses the candidate order of a CPU without AMX (``amx``:
    with), so the exact graph these tests expect does not depend on the machine running them
    (on AMX CPUs bf16 is tried before fp32; test_auto_on_amx_cpus covers that order)."""
    rt = Runtime(settings, device="cpu", engine=engine)
    rt.engines.amx = amx
    return rt


def on_cache(tmp_path: Path, manifest: Path, cache: Path, engine: str) -> Runtime:
    return runtime(Settings(home=tmp_path / "home", models=manifest, engine_cache=cache), engine)


def faces(size: int, n: int = 2) -> np.ndarray:
    """Real low-quality aligned faces, resized to ``size``: N x 3 x S x S in [-1, 1]."""
    names = sorted(p for p in shared_path("testdata", "faces").iterdir() if p.suffix == ".png")
    out = []
    for p in names[:n]:
        rgb = cv2.imread(str(p))[:, :, ::-1].astype(np.float32) / 255.0
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        out.append(rgb.transpose(2, 0, 1) * 2.0 - 1.0)
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def outputs(rt: Runtime, model_id: str) -> list[np.ndarray]:
    """The network's outputs on real inputs (seeded noise for GFPGAN, two w for CodeFormer)."""
    net = rt.load(model_id)
    if net.task == "face-detection":
        photo = cv2.imread(str(shared_path("conformance", "retinaface_photo_03.png")))
        x = net.module.prepare(np.ascontiguousarray(photo[:, :, ::-1]))
        return [np.asarray(o, np.float32) if isinstance(o, np.ndarray) else o.float().numpy()
                for o in net.run([x])]
    if net.task == "upscale":
        rgb = (faces(48, 1) + 1.0) / 2.0
        return [net(rgb)]
    x = faces(net.input_size)
    if net.kind == "gfpgan":
        return [net(x, generator=torch.Generator().manual_seed(7))]
    if net.kind == "codeformer":
        return [net(x, fidelity=0.0), net(x, fidelity=0.7)]
    return [net(x)]


@pytest.mark.parametrize("engine", FAST)
def test_each_engine_matches_torch_within_the_task_bound(setup: tuple[Path, Path],
                                                         engine: str) -> None:
    ref_rt, rt = make(setup, "torch"), make(setup, engine)
    for model_id in NETS:
        net = rt.load(model_id)
        got, ref = outputs(rt, model_id), outputs(ref_rt, model_id)
        assert net.engine_name == engine and net.precision == "fp32", model_id
        policy = policy_for(net.task)
        if net.task == "face-detection":
            ok, measure = policy.check(ref, got)
        else:  # each output on its own (CodeFormer: two fidelities)
            checks = [policy.check([r], [g]) for r, g in zip(ref, got)]
            ok, measure = all(c[0] for c in checks), "; ".join(c[1] for c in checks)
        assert ok, f"{model_id} on {engine}: {measure} ({policy.bound})"
    # the detector finds the same face to within a pixel
    photo = np.ascontiguousarray(
        cv2.imread(str(shared_path("conformance", "retinaface_photo_03.png")))[:, :, ::-1])
    a = ref_rt.load("retinaface-mobilenet0.25-facelibcfg").detect(photo, 0.8)
    b = rt.load("retinaface-mobilenet0.25-facelibcfg").detect(photo, 0.8)
    assert a.shape == b.shape == (1, 15) and np.abs(a - b).max() < 1.0


def test_seeded_gfpgan_is_reproducible_on_every_engine(setup: tuple[Path, Path]) -> None:
    runs = {e: outputs(make(setup, e), "tiny-gfpgan")[0] for e in ("torch", *FAST)}
    again = outputs(make(setup, "openvino"), "tiny-gfpgan")[0]
    assert np.array_equal(runs["openvino"], again)
    for engine in FAST:
        assert policy_for("face-restoration").check([runs["torch"]], [runs[engine]])[0]


class FreeBatchGFPGAN(GFPGANRestorer):
    """GFPGAN exported with a free batch on the image and every noise map: the graph that
    benchmarks/gfpgan_batch.py times against the product's batch-1 export."""

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        return [InputSpec(s.name, (batch, *s.shape[1:])) for s in super().inputs()]


@pytest.mark.parametrize("engine", FAST)
def test_gfpgan_gives_each_face_of_a_batch_its_batch_1_result(setup: tuple[Path, Path],
                                                             engine: str) -> None:
    """The product exports GFPGAN at batch 1 and runs a batch face by face (a batch-dynamic
    graph cost more CPU per face, see nets.GFPGANRestorer.inputs); a seeded face is what it is
    alone with the same noise. The batch-dynamic export, possible since the modulated convs use
    the constant weight, gives each face the same numbers too."""
    rt = make(setup, engine)
    net = rt.load("tiny-gfpgan")
    assert all(s.shape[0] == 1 for s in net.inputs())
    assert isinstance(net.built_engine(), OneAtATime)
    x = faces(net.input_size)
    noise = [n.numpy() for n in
             net.extra_inputs(x, generator=torch.Generator().manual_seed(5))]
    alone = np.concatenate([net.run([x[i:i + 1], *(n[i:i + 1] for n in noise)])[0]
                            for i in range(len(x))])
    assert np.array_equal(net(x, generator=torch.Generator().manual_seed(5)), alone)

    free = FreeBatchGFPGAN(net.spec, net.module)
    graph = rt.engines.exported(free, engine, "fp32")  # verified against torch float32
    assert isinstance(graph, OneAtATime)  # as every exported image graph: the batch itself
    together = np.asarray(graph.inner.run([x, *noise])[0])  # goes through the graph here
    # float32 rounding only (ONNX Runtime's batch kernels sum in another order: ~1e-6)
    assert together.shape == alone.shape
    assert np.abs(together - alone).max() <= 1e-5


def test_auto_picks_a_verified_engine_and_caches_the_verdict(setup: tuple[Path, Path]) -> None:
    rt = make(setup, "auto")
    net = rt.load("tiny-realesrgan-x2")
    rgb = (faces(48, 1) + 1.0) / 2.0
    out = net(rgb)
    assert net.engine_name in FAST and net.precision in ("fp32", "bf16")
    ref = make(setup, "torch").load("tiny-realesrgan-x2")(rgb)
    assert policy_for("upscale").check([ref], [out])[0]
    cache_root = setup[1]
    metas = [json.loads(p.read_text()) for p in cache_root.rglob("meta.json")]
    chosen = [m for m in metas if m["key"]["model_id"] == "tiny-realesrgan-x2"
              and m["key"]["engine"] == net.engine_name
              and m["key"]["precision"] == net.precision]
    assert chosen and chosen[0]["ok"] and "measure" in chosen[0]
    # a rejected candidate (if any) is remembered with its measurement, not retried
    for m in metas:
        assert m["ok"] or "outside" in m["reason"] or "export failed" in m["reason"]


def test_auto_parses_restored_faces_in_one_batch_within_the_parsing_bound(
        setup: tuple[Path, Path]) -> None:
    """What enhance-faces does with ParseNet under ``auto``: the restored crops of several real
    faces go through the exported parser in one call, and the class maps (hence the soft masks)
    stay within the face-parsing bound of torch fp32."""
    from restora.pipeline.paste import parse_to_mask
    from restora.pipeline.restore import parse_faces, restore_faces

    rt, ref = make(setup, "auto"), make(setup, "torch")
    restorer = ref.load("tiny-gfpgan")
    crops = [np.ascontiguousarray((f.transpose(1, 2, 0) + 1.0) / 2.0)
             for f in faces(restorer.input_size, 3)]
    restored = restore_faces(crops, restorer, seed=0)
    parser, parser_ref = rt.load("tiny-parsenet"), ref.load("tiny-parsenet")
    calls: list[int] = []
    inner = parser.run

    def counted(inputs: list, **kw: float) -> list:
        calls.append(int(inputs[0].shape[0]))
        return inner(inputs, **kw)

    parser.run = counted  # type: ignore[method-assign]
    got = parse_faces(parser, restored)
    want = parse_faces(parser_ref, restored)
    assert calls == [3]
    # no paste scales given: the exact graph, never a coarse one
    assert parser.engine_name in FAST and parser.precision.split("+")[0] == "fp32"
    # the bound itself, on the logits of the same batch
    size = parser.input_size
    x = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR)
                  if f.shape[0] != size else f for f in restored]).transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x * 2.0 - 1.0, dtype=np.float32)
    ok, measure = policy_for("face-parsing").check([parser_ref(x)], [inner([x])[0]])
    assert ok, measure
    for a, b, face in zip(got, want, restored):
        ma, mb = parse_to_mask(a, face.shape[0]), parse_to_mask(b, face.shape[0])
        # classes change only on boundaries: the double-blurred masks barely move
        assert float(np.abs(ma - mb).max()) <= 0.05


def test_export_cache_hit_invalidation_and_corrupt_rebuild(setup: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    manifest, cache_root = setup
    rt = make(setup, "onnxruntime")
    rt.load("tiny-realesrgan-x2")(np.zeros((1, 3, 16, 16), np.float32))
    entries = [p.parent for p in cache_root.rglob("meta.json")
               if json.loads(p.read_text())["key"]["model_id"] == "tiny-realesrgan-x2"
               and json.loads(p.read_text())["key"]["engine"] == "onnxruntime"]
    assert len(entries) == 1
    # meta.json and hashes.json went through write_atomic: no hidden temporary is left behind
    assert [p for p in cache_root.rglob(".*")] == []
    folder = entries[0]
    graph = folder / "graph.onnx"
    stamp = graph.stat().st_mtime_ns

    # hit: another process (runtime) loads the cached graph without exporting again
    make(setup, "onnxruntime").load("tiny-realesrgan-x2")(np.zeros((1, 3, 16, 16), np.float32))
    assert graph.stat().st_mtime_ns == stamp

    # a different engine version in the entry (written by another release): rebuilt
    meta = json.loads((folder / "meta.json").read_text())
    meta["key"]["engine_version"] = "0.0.1"
    (folder / "meta.json").write_text(json.dumps(meta))
    make(setup, "onnxruntime").load("tiny-realesrgan-x2")(np.zeros((1, 3, 16, 16), np.float32))
    assert graph.stat().st_mtime_ns != stamp
    stamp = graph.stat().st_mtime_ns

    # corrupt files: truncated (size check) and same-size garbage (fails to load): rebuilt
    for corrupt in ("truncate", "garbage"):
        size = graph.stat().st_size
        if corrupt == "truncate":
            graph.write_bytes(graph.read_bytes()[: size // 2])
        else:
            graph.write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))
        net = make(setup, "onnxruntime").load("tiny-realesrgan-x2")
        out = net(np.full((1, 3, 16, 16), 0.5, np.float32))
        assert net.engine_name == "onnxruntime" and out.shape == (1, 3, 32, 32)
        assert graph.stat().st_mtime_ns != stamp
        stamp = graph.stat().st_mtime_ns

    # a different model file (same id, other weights): another hash, another entry
    other = tmp_path / "x2-copy.pth"
    state = torch.load(shared_path("conformance", "rrdbnet_s2.tiny.pth"), weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other)
    entries_before = set(cache_root.rglob("meta.json"))
    cache = ExportCache(cache_root)
    assert cache.model_hash(other) != cache.model_hash(
        shared_path("conformance", "rrdbnet_s2.tiny.pth"))
    data = json.loads(manifest.read_text())
    for e in data["models"]:
        if e["id"] == "tiny-realesrgan-x2":
            e["path"] = str(other)
    other_manifest = tmp_path / "models.json"
    other_manifest.write_text(json.dumps(data))
    rt2 = Runtime(Settings(home=tmp_path / "home", models=other_manifest,
                           engine_cache=cache_root), device="cpu", engine="onnxruntime")
    rt2.load("tiny-realesrgan-x2")(np.zeros((1, 3, 16, 16), np.float32))
    assert len(set(cache_root.rglob("meta.json")) - entries_before) == 1


def test_openvino_imports_its_compiled_blob_in_a_later_process(setup: tuple[Path, Path]
                                                               ) -> None:
    """OpenVINO's compiled blob is kept in the entry's folder: a later runtime (another
    process) imports it instead of compiling, with the same outputs; a corrupt blob is
    compiled anew, not the entry rebuilt."""
    x = np.random.default_rng(5).uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)

    def opened() -> tuple[Any, np.ndarray]:
        net = make(setup, "openvino").load("tiny-realesrgan-x2")
        out = np.asarray(net(x))
        assert net.engine_name == "openvino" and net.precision == "fp32"
        engine = net.engine
        return (engine.inner if isinstance(engine, OneAtATime) else engine), out

    first, want = opened()
    _, cache_root = setup
    folder = next(p.parent for p in cache_root.rglob("meta.json")
                  if json.loads(p.read_text())["key"]["model_id"] == "tiny-realesrgan-x2"
                  and json.loads(p.read_text())["key"]["engine"] == "openvino"
                  and json.loads(p.read_text())["key"]["precision"] == "fp32")
    blobs = list((folder / "compiled").glob("*.blob"))
    assert len(blobs) == 1
    stamp = blobs[0].stat().st_mtime_ns
    graph_stamp = (folder / "graph.xml").stat().st_mtime_ns

    later, got = opened()
    assert later.from_cache
    assert np.array_equal(got, want)
    assert blobs[0].stat().st_mtime_ns == stamp

    blobs[0].chmod(0o600)  # OpenVINO writes its blobs read-only
    blobs[0].write_bytes(b"\x00garbage" * (blobs[0].stat().st_size // 8))
    again, got = opened()
    assert not again.from_cache
    assert np.array_equal(got, want)
    assert (folder / "graph.xml").stat().st_mtime_ns == graph_stamp


def test_a_graph_whose_weightless_blob_is_refused_keeps_a_full_one(setup: tuple[Path, Path]
                                                                    ) -> None:
    """OpenVINO 2026.4 compiles CodeFormer's graph into a weightless blob it then does not
    import: after the second compile a marker makes the entry keep a full blob, which later
    processes import, with the same outputs."""
    _, cache_root = setup
    n = make(setup, "openvino").load("tiny-codeformer").input_size
    x = np.random.default_rng(6).uniform(-1, 1, (1, 3, n, n)).astype(np.float32)
    imported, outs = [], []
    for _ in range(4):
        net = make(setup, "openvino").load("tiny-codeformer")
        outs.append(np.asarray(net(x, fidelity=0.5)))
        engine = net.engine
        imported.append((engine.inner if isinstance(engine, OneAtATime) else engine).from_cache)
    folder = next(p.parent for p in cache_root.rglob("meta.json")
                  if json.loads(p.read_text())["key"]["model_id"] == "tiny-codeformer"
                  and json.loads(p.read_text())["key"]["engine"] == "openvino")
    assert imported[-1], imported
    if not imported[1]:  # the weightless blob was refused: the entry keeps full ones now
        assert (folder / "compiled" / "graph.full").exists()
    assert all(np.array_equal(o, outs[0]) for o in outs)


def test_settle_compiled_leaves_blobs_the_next_process_imports(setup: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    """``settle_compiled`` compiles each graph compiled and not imported since until OpenVINO
    imports its blob: CodeFormer's refused weightless blob (a full one is written, then
    imported) and GFPGAN's weightless one (imported at once); a new process then imports both,
    and a second settle compiles nothing."""
    manifest, _ = setup
    cache = tmp_path / "cache"
    rt = on_cache(tmp_path, manifest, cache, "openvino")  # forced: one compile, no check
    for model_id in ("tiny-codeformer", "tiny-gfpgan"):
        rt.load(model_id).prepare()
        rt.unload(model_id)
    settled = {s["key"]["model_id"]: s for s in settle_compiled(cache)}
    assert set(settled) == {"tiny-codeformer", "tiny-gfpgan"}
    assert all(s["imported"] and s["graph"] == "graph" for s in settled.values()), settled
    assert settled["tiny-gfpgan"]["compiles"] == 1
    cf = Path(settled["tiny-codeformer"]["path"]).parent / "compiled"
    # where OpenVINO refuses the weightless blob: refused, full blob written, imported
    assert settled["tiny-codeformer"]["compiles"] == (3 if (cf / "graph.full").exists() else 1)
    assert settle_compiled(cache) == []

    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "from restora.models.engines import OpenVINOEngine\n"
            "print(json.dumps([OpenVINOEngine(Path(p), ['x'], int(sys.argv[1])).from_cache "
            "for p in sys.argv[2:]]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(rt.engines.threads),
                           *(s["path"] for s in settled.values())],
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                          capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(proc.stdout.splitlines()[-1]) == [True, True]


def test_restora_engine_is_honoured_and_reported(setup: tuple[Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from restora.pipeline.enhance import enhance_faces
    from restora.io import decode

    manifest, cache = setup
    monkeypatch.setenv("RESTORA_ENGINE", "onnxruntime")
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    monkeypatch.setenv("RESTORA_ENGINE_CACHE", str(cache))
    monkeypatch.setenv("RESTORA_HOME", str(cache.parent / "home-env"))
    rt = Runtime(device="cpu")
    assert rt.engines.choice == "onnxruntime"
    result = enhance_faces(decode(shared_path("testdata", "photos", "03.jpg")), runtime=rt,
                           model="codeformer")
    report = result.to_dict()
    assert report["engine"] == "onnxruntime" and report["precision"] == "fp32"
    assert report["engines"]["tiny-codeformer"] == "onnxruntime/fp32"
    assert report["engines"]["tiny-parsenet"] == "onnxruntime/fp32"


def test_missing_engine_package_falls_back_to_torch_with_a_warning(
        setup: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    rt = make(setup, "openvino")
    net = rt.load("tiny-realesrgan-x2")
    with pytest.warns(RuntimeWarning, match="openvino package is not installed"):
        out = net(np.zeros((1, 3, 16, 16), np.float32))
    assert net.engine_name == "torch" and out.shape == (1, 3, 32, 32)
    assert any("openvino" in n for n in rt.engines.notes)


def test_unknown_engine_is_a_clear_error(setup: tuple[Path, Path]) -> None:
    from restora.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match="unknown engine"):
        make(setup, "tensorrt")


def test_cache_folder_keys_differ_by_every_field(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    key = {"model": "a" * 64, "model_id": "m", "engine": "openvino", "engine_version": "1",
           "precision": "fp32", "shape": "x:?x3x?x?", "format": 1, "torch": "2"}
    folders = {cache.folder(key)}
    for field, value in (("model", "b" * 64), ("engine", "onnxruntime"),
                         ("engine_version", "2"), ("precision", "bf16"), ("shape", "x:1x3x8x8")):
        folders.add(cache.folder({**key, field: value}))
    assert len(folders) == 6
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_auto_tries_bf16_first_only_on_cpus_with_amx(tmp_path):
    """bf16 was slower than fp32 on the AVX-512-BF16 machine here, many times faster with AMX:
    the order follows the CPU, and each candidate still has to pass the task's bound."""
    from restora.models.engines import EngineFactory, cpu_candidates, cpu_has_amx, policy_for

    parsing = policy_for("face-parsing").cpu
    assert cpu_candidates(parsing, amx=False) == list(parsing)
    assert cpu_candidates(parsing, amx=False)[-2:] == [("openvino", "bf16"), ("openvino", MIXED)]
    assert cpu_candidates(parsing, amx=True) == [("openvino", "int8"), ("openvino", "bf16"),
                                                  ("openvino", MIXED), ("openvino", "fp32"),
                                                  ("onnxruntime", "fp32")]
    restoring = policy_for("face-restoration").cpu  # bf16 last without AMX, first with it
    assert cpu_candidates(restoring, amx=False) == [("openvino", "fp32"),
                                                    ("onnxruntime", "fp32"), ("openvino", "bf16")]
    assert cpu_candidates(restoring, amx=True) == [("openvino", "bf16"), ("openvino", "fp32"),
                                                   ("onnxruntime", "fp32")]
    upscaling = policy_for("upscale").cpu  # the chained bf16 graphs right after bf16 with AMX
    assert cpu_candidates(upscaling, amx=False) == [
        ("openvino", "fp32"), ("onnxruntime", "fp32"), ("openvino", "bf16"),
        ("openvino", STREAM)]
    assert cpu_candidates(upscaling, amx=True) == [
        ("openvino", "bf16"), ("openvino", STREAM), ("openvino", "fp32"), ("onnxruntime", "fp32")]

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_has_amx(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert not cpu_has_amx(info)
    assert not cpu_has_amx(tmp_path / "missing")
    assert EngineFactory().amx == cpu_has_amx()


def test_auto_on_an_amx_cpu_parses_with_the_first_candidate_within_the_bound(
        setup: tuple[Path, Path]) -> None:
    """With AMX the parser's exact graph is the first of int8, bf16, bf16-fp32io and fp32 whose
    probe verdict passed, and its coarse graphs never repeat the exact one's precision."""
    _needs_bf16()
    from restora.models.engines import cpu_candidates, policy_for

    cache_root = setup[1]
    parser = make(setup, "auto", amx=True).load("tiny-parsenet")
    parser(faces(parser.input_size, 1), px_per_output=1.0)
    verdicts = {m["key"]["precision"]: m["ok"] for m in
                (json.loads(p.read_text()) for p in cache_root.rglob("meta.json"))
                if m["key"]["model_id"] == "tiny-parsenet" and m["key"]["engine"] == "openvino"
                and "measure" in m}
    order = [p for e, p in cpu_candidates(policy_for("face-parsing").cpu, True)
             if e == "openvino" and (p != "int8" or "int8" in verdicts)]
    first_ok = next(p for p in order if verdicts[p])
    exact = parser.precision.split("+")[0]
    assert exact == first_ok and parser.engine_name == "openvino"
    assert all(g.precision != exact for g, _ in parser.coarse)


def _entries(cache: Path, model_id: str) -> dict[tuple[str, str], tuple[Path, dict]]:
    """The cache's entries of ``model_id``: (engine, precision) -> (meta.json, its content)."""
    out = {}
    for path in cache.rglob("meta.json"):
        meta = json.loads(path.read_text())
        if meta["key"]["model_id"] == model_id:
            out[(meta["key"]["engine"], meta["key"]["precision"])] = (path, meta)
    return out


def test_gfpgan_tries_bf16_only_on_amx_cpus_and_keeps_it_by_its_verdict(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Without AMX a restorer's auto stops at OpenVINO fp32 and never exports bf16; with AMX
    GFPGAN's bf16 graph is tried first and serves exactly when its probe verdict passed (on
    tiny weights either may happen), else OpenVINO fp32 does. CodeFormer never gets bf16.
    Every verdict records the probe's CPU seconds."""
    from restora.models.engines import _precision_allowed

    manifest, _ = setup
    settings = Settings(home=tmp_path / "home", models=manifest, engine_cache=tmp_path / "c")
    plain = runtime(settings, "auto", amx=False)
    net = plain.load("tiny-gfpgan")
    x = faces(net.input_size, 1)
    net(x, generator=torch.Generator().manual_seed(7))
    assert (net.engine_name, net.precision) == ("openvino", "fp32")
    entries = _entries(tmp_path / "c", "tiny-gfpgan")
    assert list(entries) == [("openvino", "fp32")] and entries["openvino", "fp32"][1]["cpu_s"] > 0
    assert entries["openvino", "fp32"][1]["task"] == "face-restoration"
    codeformer = plain.load("tiny-codeformer")
    assert _precision_allowed(net, "bf16") and not _precision_allowed(codeformer, "bf16")
    _needs_bf16()
    amx = runtime(settings, "auto", amx=True)
    net = amx.load("tiny-gfpgan")
    got = net(x, generator=torch.Generator().manual_seed(7))
    _, bf16 = _entries(tmp_path / "c", "tiny-gfpgan")["openvino", "bf16"]
    assert "PSNR" in bf16["measure"] and bf16["cpu_s"] > 0
    assert (net.engine_name, net.precision) == ("openvino", "bf16" if bf16["ok"] else "fp32")
    ref = make(setup, "torch").load("tiny-gfpgan")(x, generator=torch.Generator().manual_seed(7))
    assert policy_for("face-restoration").check([ref], [got])[0]
    codeformer = amx.load("tiny-codeformer")
    assert codeformer.precision == "fp32"
    assert ("openvino", "bf16") not in _entries(tmp_path / "c", "tiny-codeformer")


def test_a_verdict_without_probe_time_is_timed_once(setup: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    """A verdict cached before every task's probe was timed gets its CPU seconds on the next
    auto load, once: the graph is not exported or verified again, and later loads (other
    processes included) read the time from the cache."""
    manifest, _ = setup
    settings = Settings(home=tmp_path / "home", models=manifest, engine_cache=tmp_path / "c")

    def load() -> tuple[Path, dict]:
        net = runtime(settings, "auto").load("tiny-gfpgan")
        net(faces(net.input_size, 1))
        assert net.engine.probe_cpu_s == _entries(tmp_path / "c", "tiny-gfpgan")[
            "openvino", "fp32"][1]["cpu_s"]
        return _entries(tmp_path / "c", "tiny-gfpgan")["openvino", "fp32"]

    path, meta = load()
    graph_mtime = (path.parent / "graph.xml").stat().st_mtime_ns
    path.write_text(json.dumps({k: v for k, v in meta.items() if k != "cpu_s"}))
    path, again = load()
    assert again["cpu_s"] > 0 and again["measure"] == meta["measure"]
    assert (path.parent / "graph.xml").stat().st_mtime_ns == graph_mtime
    meta_mtime = path.stat().st_mtime_ns
    assert load()[1] == again and path.stat().st_mtime_ns == meta_mtime


def _edge_map(size: int = 128) -> np.ndarray:
    """A parsing map: skin (1) in a centred disc, background (0) around it."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2, 1, 0)


def _logits(classes: np.ndarray) -> list[np.ndarray]:
    one_hot = np.stack([classes == k for k in range(19)]).astype(np.float32)
    return [one_hot[None]]


def test_paste_mask_bound_allows_a_1px_edge_move_and_refuses_a_flipped_patch() -> None:
    from restora.models.engines import paste_mask_check

    ref = _edge_map()
    assert paste_mask_check(_logits(ref), _logits(ref))[0]
    moved = np.roll(ref, 1, axis=1)  # every mask edge one pixel to the right
    ok, measure = paste_mask_check(_logits(ref), _logits(moved))
    assert ok, measure
    blob = ref.copy()
    blob[4:24, 4:24] = 1  # a 20 px patch of background parsed as skin
    ok, measure = paste_mask_check(_logits(ref), _logits(blob))
    assert not ok and "paste mask max |d|" in measure
    assert not paste_mask_check(_logits(ref), _logits(moved), 0.5)[0]  # int8's stricter share
    inner = ref.copy()
    inner[60:68, 60:68] = 2  # skin -> nose inside the face: the paste mask does not change
    assert paste_mask_check(_logits(ref), _logits(inner)) == (True, paste_mask_check(
        _logits(ref), _logits(ref))[1])


def test_parser_probe_and_int8_calibration_are_the_aligned_face(setup: tuple[Path, Path]
                                                                ) -> None:
    from restora.models.nets import probe_face

    parser = make(setup, "torch").load("tiny-parsenet")
    s = parser.input_size
    face = probe_face(s, s)
    x = parser.probe_image(np.random.default_rng(0), (2, 3, s, s))
    assert x.shape == (2, 3, s, s) and x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_allclose(x[0], face.transpose(2, 0, 1) * 2.0 - 1.0, atol=1e-6)
    np.testing.assert_allclose(x[1], x[0][:, :, ::-1], atol=1e-6)  # the mirrored face
    calib = parser.calibration_inputs()
    assert len(calib) >= 4 and all(c.shape == (1, 3, s, s) for c in calib)
    assert all(not np.allclose(a, b, atol=1e-3) for i, a in enumerate(calib) for b in calib[:i])
    restorer = make(setup, "torch").load("tiny-gfpgan")
    assert not restorer.int8_calibration


def test_auto_tries_int8_for_the_parser_and_keeps_it_only_within_the_bound(
        setup: tuple[Path, Path]) -> None:
    """int8 is the parser's first candidate: the graph is really quantized (FakeQuantize
    layers, NNCF version in the cache key), its verdict is the paste-mask bound measured on the
    probe face, and the engine auto returns is int8 exactly when that verdict passed."""
    pytest.importorskip("nncf")
    manifest, cache_root = setup
    parser = make(setup, "auto").load("tiny-parsenet")
    parser(parser.probe_image(np.random.default_rng(0), (1, 3, parser.input_size,
                                                         parser.input_size)))
    metas = [json.loads(p.read_text()) for p in cache_root.rglob("meta.json")]
    int8 = [m for m in metas if m["key"]["model_id"] == "tiny-parsenet"
            and m["key"]["precision"] == "int8"]
    assert len(int8) == 1 and int8[0]["key"]["nncf"]
    meta = int8[0]
    assert "paste mask max |d|" in meta["measure"]
    margin = float(meta["measure"].rsplit(" ", 1)[1])
    assert meta["ok"] == (margin >= 0.0) and "0.5 x the 1 px envelope" in meta["measure"]
    assert meta["task"] == "face-parsing"
    assert parser.precision.split("+")[0] == ("int8" if meta["ok"] else "fp32")
    if not meta["ok"]:
        assert parser.engine_name in FAST
    folder = next(p.parent for p in cache_root.rglob("meta.json")
                  if json.loads(p.read_text()) == meta)
    assert "FakeQuantize" in (folder / "graph.xml").read_text()


def test_a_first_int8_export_writes_nothing_on_stdout(setup: tuple[Path, Path], tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """stdout carries the CLI's ``--json`` lines and the service's logs: NNCF's calibration
    progress bar and its log lines (both on stdout by default) must not reach it."""
    pytest.importorskip("nncf")
    manifest, _ = setup
    rt = on_cache(tmp_path, manifest, tmp_path / "fresh-cache", "auto")
    parser = rt.load("tiny-parsenet")
    parser(parser.probe_image(np.random.default_rng(1), (1, 3, parser.input_size,
                                                         parser.input_size)))
    metas = [json.loads(p.read_text()) for p in (tmp_path / "fresh-cache").rglob("meta.json")]
    assert any(m["key"]["precision"] == "int8" for m in metas)  # NNCF did run
    assert capfd.readouterr().out == ""


def test_paste_mask_scale_is_the_least_output_scale_whose_envelope_covers_the_error() -> None:
    """An edge error of k parsing pixels keeps the bound for faces pasted at k or more parsing
    pixels per output pixel (there it is at most one output pixel); a flipped patch never does;
    int8's half share needs a coarser scale."""
    from restora.models.engines import mask_envelope, paste_mask_scale

    ref = _edge_map()
    env = [mask_envelope(ref, k) for k in range(1, 9)]
    assert all(b > a for a, b in zip(env, env[1:]))  # a larger move changes the mask more
    assert paste_mask_scale(_logits(ref), _logits(ref))[0] == 1
    for k in (1, 2, 3, 5):
        moved = np.roll(ref, k, axis=1)
        assert paste_mask_scale(_logits(ref), _logits(moved))[0] == k
    half = paste_mask_scale(_logits(ref), _logits(np.roll(ref, 2, axis=1)), 0.5)[0]
    assert half is not None and half > 2
    blob = ref.copy()
    blob[4:40, 4:40] = 1  # 36 px of background parsed as skin: no scale hides that
    scale, measure = paste_mask_scale(_logits(ref), _logits(blob))
    assert scale is None and "from k = none" in measure


def _meta(cache: Path, precision: str) -> tuple[Path, dict]:
    path = next(p for p in cache.rglob("meta.json")
                if json.loads(p.read_text())["key"]["model_id"] == "tiny-parsenet"
                and json.loads(p.read_text())["key"]["precision"] == precision)
    return path, json.loads(path.read_text())


def _needs_bf16() -> None:
    from restora.models.engines import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no bf16: OpenVINO cannot run the bf16 graphs checked here")


def test_small_faces_parse_on_the_coarse_graph_and_the_rest_on_the_exact_one(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """The coarse (bf16) graph's verdict records its scale k and its probe time; where it is
    faster than the exact graph, inputs pasted at k or more parsing pixels per output pixel run
    on it (opened on first need) and the others on the exact graph; ``parse_faces`` sends each
    face to its graph and keeps the faces' order; an explicit engine never uses it."""
    _needs_bf16()
    from restora.models.engines import OpenVINOEngine
    from restora.pipeline.restore import parse_faces

    manifest, cache_root = setup
    first = make(setup, "auto").load("tiny-parsenet")
    x = faces(first.input_size, 2)
    first(x)  # builds the exact graph; a face without a scale needs no coarse graph
    assert first._coarse is None
    first.coarse  # noqa: B018 - builds the coarse candidates' entries, with their verdicts
    path, meta = _meta(cache_root, "bf16")
    assert "k px envelope" in meta["scale_measure"] and meta["cpu_s"] > 0
    assert "scale" in meta
    # which candidates serve depends on their measured probe times (bf16 and the mixed graph
    # against the exact one): the graphs kept are those their own verdicts give
    built = {json.loads(p.read_text())["key"]["precision"]: json.loads(p.read_text())
             for p in cache_root.rglob("meta.json")
             if json.loads(p.read_text())["key"]["model_id"] == "tiny-parsenet"}
    verdicts = [(precision, built[precision]) for engine, precision
                in policy_for("face-parsing").coarse
                if precision in built and (engine, precision) != (first.engine.name,
                                                                  first.engine.precision)]
    assert any(p == "bf16" for p, _ in verdicts)
    want = coarse_tiers(verdicts, first.engine.probe_cpu_s)
    assert [(g.precision, k) for g, k in first.coarse] == [(p, k) for p, k in want]
    cache = tmp_path / "cache"
    shutil.copytree(cache_root, cache)
    mixed_path, mixed = _meta(cache, MIXED)  # here the bf16 graph alone is the coarse one
    mixed_path.write_text(json.dumps({**mixed, "scale": None}))
    path, meta = _meta(cache, "bf16")
    path.write_text(json.dumps({**meta, "scale": 2, "cpu_s": 0.0}))
    rt = on_cache(tmp_path, manifest, cache, "auto")
    parser = rt.load("tiny-parsenet")
    coarse = OpenVINOEngine(path.parent / "graph.xml", ["x"], 1, "bf16").run([x])[0]
    exact = parser.run([x])[0]
    assert not np.allclose(coarse, exact, atol=1e-3)  # the two graphs really differ
    np.testing.assert_array_equal(parser(x, px_per_output=1.9), exact)
    assert not parser.coarse[0][0].opened  # loaded only once a face is pasted small enough
    np.testing.assert_array_equal(parser(x, px_per_output=2.0), coarse)
    assert parser.coarse[0][0].opened
    assert parser.coarse_from == 2 and parser.precision == "fp32+bf16"
    assert [parser.precision_for(ks) for ks in ([3.0, 1.0], [2.0], [1.0, None])] == [
        "fp32+bf16", "bf16", "fp32"]  # what a job with faces at these scales ran
    crops = [np.ascontiguousarray((f.transpose(1, 2, 0) + 1.0) / 2.0) for f in x]
    maps = parse_faces(parser, crops, px_per_output=[3.0, 1.0])
    np.testing.assert_array_equal(maps[0], parser(x[:1], px_per_output=3.0)[0].argmax(0))
    np.testing.assert_array_equal(maps[1], parser(x[1:], px_per_output=1.0)[0].argmax(0))
    forced = on_cache(tmp_path, manifest, cache, "openvino").load("tiny-parsenet")
    assert forced.coarse == []
    np.testing.assert_array_equal(forced(x, px_per_output=8.0), exact)
    # a coarse graph no faster than the exact one is not used
    path.write_text(json.dumps({**meta, "scale": 2, "cpu_s": 1e6}))
    slow = on_cache(tmp_path, manifest, cache, "auto").load("tiny-parsenet")
    assert slow.coarse == []
    np.testing.assert_array_equal(slow(x, px_per_output=8.0), exact)


def test_mixed_precision_runs_the_output_layer_in_float32(setup: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    """bf16-fp32io is one OpenVINO graph compiled for bf16: its input layer is fed the image as
    exact bf16 parts (so that layer keeps float32 accuracy), its output layer is a transposed
    conv (graphs.FloatTail), which OpenVINO leaves in float32 as the graph's tail, so the
    logits are what float32 makes of the bf16 features. Among usable coarse graphs the one with
    the least scale serves, then the quicker."""
    _needs_bf16()
    from restora.models.engines import OpenVINOEngine, open_mixed

    manifest, cache_root = setup
    make(setup, "auto").load("tiny-parsenet")(faces(64, 1), px_per_output=1.0)
    cache = tmp_path / "cache"
    shutil.copytree(cache_root, cache)
    mixed_path, mixed = _meta(cache, MIXED)
    bf16_path, bf16 = _meta(cache, "bf16")
    assert sorted(mixed["files"]) == ["graph.bin", "graph.xml"]
    assert "scale" in mixed and mixed["cpu_s"] > 0
    folder = mixed_path.parent
    ref = make(setup, "torch").load("tiny-parsenet")
    x = faces(ref.input_size, 2)
    compiled = OpenVINOEngine(folder / "graph.xml", ["x"], 1, "bf16").compiled
    ran: dict[str, set[str]] = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        ran.setdefault(info["layerType"].astype(str), set()).add(
            info["runtimePrecision"].astype(str))
    assert ran["Convolution"] == {"bf16"} and ran["Deconvolution"] == {"f32"}, ran
    head32 = open_mixed(folder, ["x"], 1).run([x])[0]
    all16 = OpenVINOEngine(bf16_path.parent / "graph.xml", ["x"], 1, "bf16").run([x])[0]
    # all-bf16 rounds its logits to bf16 values; the float32 tail does not
    assert not (all16.view(np.uint32) & 0xFFFF).any()
    assert (head32.view(np.uint32) & 0xFFFF).astype(bool).mean() > 0.9
    want = ref.run([x])[0].numpy()
    assert np.abs(head32 - want).max() < np.abs(all16 - want).max()

    # the exact graph's probe time is fixed too: the tiny probes take milliseconds, so a busy
    # machine could otherwise make the coarse graphs' times below look no quicker
    exact_path, exact = _meta(cache, "fp32")
    exact_path.write_text(json.dumps({**exact, "cpu_s": 1.0}))

    def load(mixed_scale: int, bf16_scale: int, mixed_s: float = 0.0, bf16_s: float = 0.0):
        mixed_path.write_text(json.dumps({**mixed, "scale": mixed_scale, "cpu_s": mixed_s}))
        bf16_path.write_text(json.dumps({**bf16, "scale": bf16_scale, "cpu_s": bf16_s}))
        return on_cache(tmp_path, manifest, cache, "auto").load("tiny-parsenet")

    # each scale gets its quickest graph: the mixed one from 2, all-bf16 (quicker) from 4
    parser = load(2, 4, mixed_s=0.002, bf16_s=0.001)
    assert [(g.precision, k) for g, k in parser.coarse] == [(MIXED, 2), ("bf16", 4)]
    assert parser.precision == f"fp32+{MIXED}+bf16"
    got = parser(x, px_per_output=3.0)
    np.testing.assert_array_equal(got, head32)
    np.testing.assert_array_equal(parser(x, px_per_output=4.0), all16)
    assert parser.precision_for([1.0, 3.0]) == f"fp32+{MIXED}"
    assert parser.precision_for([5.0, 3.0, None]) == f"fp32+{MIXED}+bf16"
    # parse_faces: each face on its scale's graph, batched per graph, maps in the faces' order
    from restora.pipeline.restore import parse_faces

    crops = [np.ascontiguousarray((f.transpose(1, 2, 0) + 1.0) / 2.0) for f in (*x, *x)]
    scales = [5.0, 1.0, 3.0, 4.5]
    calls: list[tuple[int, float | None]] = []
    inner = parser.run

    def counted(inputs: list, px_per_output: float | None = None) -> list:
        calls.append((int(inputs[0].shape[0]), px_per_output))
        return inner(inputs, px_per_output=px_per_output)

    parser.run = counted  # type: ignore[method-assign]
    maps = parse_faces(parser, crops, px_per_output=scales)
    assert calls == [(2, 4.5), (1, None), (1, 3.0)]  # bf16, exact, mixed: one batch each
    del parser.run
    for crop, k, got_map in zip(crops, scales, maps):
        one = np.ascontiguousarray(crop.transpose(2, 0, 1)[None] * 2.0 - 1.0, dtype=np.float32)
        np.testing.assert_array_equal(got_map, parser(one, px_per_output=k)[0].argmax(0))
    # a graph that needs a coarser scale and is no quicker serves nobody
    for args, tiers in (((2, 4, 0.001, 0.002), [(MIXED, 2)]), ((4, 2), [("bf16", 2)]),
                        ((2, 2, 0.001, 0.0), [("bf16", 2)]),
                        ((2, 2, 0.0, 0.001), [(MIXED, 2)])):
        assert [(g.precision, k) for g, k in load(*args).coarse] == tiers


def test_exact_input_keeps_the_first_layer_float32_accurate_in_bf16(setup: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    """split_bf16 gives parts bf16 holds exactly that sum to the input; ExactInput's conv on
    them equals the layer's in float32, and compiled in bf16 it stays much closer to float32
    than the layer itself compiled in bf16 (which rounds the image and the taps)."""
    _needs_bf16()
    from restora.models.engines import OpenVINOEngine, _to_openvino, export_onnx
    from restora.models.graphs import ExactInput
    from restora.models.nets import InputSpec

    x = faces(64, 2)
    parts = split_bf16(x)
    assert parts.shape == (2, 9, 64, 64)
    hi, lo = parts[:, :3], parts[:, 3:6]
    np.testing.assert_array_equal(parts[:, 6:], hi)
    assert not (hi.view(np.uint32) & 0xFFFF).any()  # hi is a bf16 value
    np.testing.assert_array_equal(hi + lo, x)
    lo16 = torch.from_numpy(lo).to(torch.bfloat16).float().numpy()
    assert np.abs(lo16 - lo).max() <= 2.0 ** -8 * np.abs(lo).max()

    net = make(setup, "torch").load("tiny-parsenet")
    stem = net.module.encoder[0]
    exact = ExactInput(stem).eval()
    with torch.inference_mode():
        want = stem(torch.from_numpy(x)).numpy()
        # within the dropped lo * w_lo term: ~2^-16 of the products
        np.testing.assert_allclose(exact(torch.from_numpy(parts)).numpy(), want, atol=5e-5)
    free = (None, None, None, None)
    export_onnx(net, [InputSpec("x", free)], [parts], tmp_path / "exact.onnx", exact)
    export_onnx(net, [InputSpec("x", free)], [x], tmp_path / "plain.onnx", stem)
    for name in ("exact", "plain"):
        _to_openvino(tmp_path / f"{name}.onnx", tmp_path / f"{name}.xml")
    got = OpenVINOEngine(tmp_path / "exact.xml", ["x"], 1, "bf16").run([parts])[0]
    plain = OpenVINOEngine(tmp_path / "plain.xml", ["x"], 1, "bf16").run([x])[0]
    # both graphs store the conv's output in bf16: count errors in bf16 steps of the value
    step = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(want), 2.0 ** -4))) - 7)
    err_exact, err_plain = np.abs(got - want) / step, np.abs(plain - want) / step
    # here (AMX): at most 2.2 steps and 12% of values past the output's own rounding (half a
    # step), against 7.9 steps and 40% for the layer in bf16
    assert err_exact.max() * 2 < err_plain.max()
    assert (err_exact > 0.5).mean() * 2 < (err_plain > 0.5).mean()


def test_a_two_graph_mixed_entry_from_before_is_rebuilt_as_one_graph(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Caches written before bf16-fp32io became one graph hold body.xml + head.xml under the
    same key: the engine factory fails to open graph.xml there, rebuilds the entry once, and
    the parser runs as it would on a fresh cache."""
    _needs_bf16()
    manifest, cache_root = setup
    make(setup, "auto").load("tiny-parsenet").coarse  # noqa: B018 - builds every candidate
    cache = tmp_path / "cache"
    shutil.copytree(cache_root, cache)
    mixed_path, mixed = _meta(cache, MIXED)
    folder = mixed_path.parent
    for suffix in ("xml", "bin"):  # the old layout, with a meta that matches its files
        (folder / f"graph.{suffix}").rename(folder / f"body.{suffix}")
        (folder / f"head.{suffix}").write_bytes(b"old head")
    ExportCache(cache).write(folder, mixed["key"], {k: v for k, v in mixed.items()
                                                     if k not in ("key", "files")})
    x = faces(64, 2)

    def mixed_graph(root: Path) -> Any:  # whichever role its verdict gives it on this CPU
        rt = on_cache(tmp_path, manifest, root, "auto")
        return rt.engines._load(rt.load("tiny-parsenet"), "openvino", MIXED, True,
                                lambda meta: True)[0]

    out = mixed_graph(cache).run([x])[0]
    assert sorted(json.loads(mixed_path.read_text())["files"]) == ["graph.bin", "graph.xml"]
    assert not (folder / "body.xml").exists()
    np.testing.assert_array_equal(out, mixed_graph(cache_root).run([x])[0])


def test_float_tail_is_the_same_layer_as_a_transposed_conv(setup: tuple[Path, Path]) -> None:
    """FloatTail writes a stride-1 output layer as the equal transposed conv (what OpenVINO keeps
    in float32 as a bf16 graph's tail); convs it cannot rewrite are refused."""
    from restora.models.graphs import FloatTail

    net = make(setup, "torch").load("tiny-parsenet")
    head = net.module.out_mask_conv
    features = torch.from_numpy(faces(16, 2)).repeat(1, 22, 1, 1)[:, :head.conv2d.in_channels]
    tail = FloatTail(head).eval()
    assert isinstance(tail.layer.conv2d, torch.nn.ConvTranspose2d)
    with torch.inference_mode():
        np.testing.assert_allclose(tail(features).numpy(), head(features).numpy(), atol=1e-5)
    down = net.module.encoder[1].conv2
    assert down.conv2d.stride == (2, 2)
    with pytest.raises(ValueError, match="stride-1"):
        FloatTail(down)


def test_a_verdict_without_scale_or_time_is_measured_again(setup: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    """Verdicts cached before coarse graphs existed get their scale and probe time on the next
    load (the graph is not exported again)."""
    _needs_bf16()
    manifest, cache_root = setup
    make(setup, "auto").load("tiny-parsenet")(faces(64, 1), px_per_output=1.0)
    cache = tmp_path / "cache"
    shutil.copytree(cache_root, cache)
    path, meta = _meta(cache, "bf16")
    graph_mtime = (path.parent / "graph.xml").stat().st_mtime_ns
    old = {k: v for k, v in meta.items() if k not in ("scale", "scale_measure", "cpu_s")}
    path.write_text(json.dumps(old))
    parser = on_cache(tmp_path, manifest, cache, "auto").load("tiny-parsenet")
    parser(faces(parser.input_size, 1), px_per_output=1.0)  # looks the coarse graphs up
    _, again = _meta(cache, "bf16")
    assert again["scale"] == meta["scale"] and again["measure"] == meta["measure"]
    assert again["cpu_s"] > 0
    assert (path.parent / "graph.xml").stat().st_mtime_ns == graph_mtime


def test_cuda_math_sets_tf32_inside_and_puts_back_what_it_found() -> None:
    """The TF32 switches are torch's process-wide state (they exist on CPU builds too, which is
    how this runs here): set for the kernels queued inside, nested blocks each restored, and an
    application's own choice (cuDNN's default is TF32 on) found again after."""
    import threading

    from restora.models.engines import cuda_math

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = True, False  # torch's defaults
        with cuda_math(False):
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
            with cuda_math(True):  # a graph running another engine: re-entrant
                assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)
            assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, False)
        with pytest.raises(ZeroDivisionError), cuda_math(True):
            1 / 0  # noqa: B018 - a failing forward restores them too
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, False)
        # another thread waits for the block: it never runs in this one's maths
        seen: list[bool] = []

        def other_forward() -> None:
            with cuda_math(False):
                seen.append(cudnn.allow_tf32)

        with cuda_math(True):
            other = threading.Thread(target=other_forward)
            other.start()
            other.join(timeout=0.3)
            assert other.is_alive() and cudnn.allow_tf32  # blocked on the lock
        other.join(timeout=10)
        assert seen == [False]
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_gpu_half_precision_is_kept_only_within_the_bound(setup: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    """On a GPU, auto runs a network in the first of its task's half precisions (fp16, then
    bf16; then TF32, CUDA only) in which the probe's output stays within the task's bound of
    float32 on that device; else float32, with a warning naming each measurement. The check
    does not depend on CUDA, so it runs here on the CPU's own fp16 and bf16: tiny GFPGAN keeps
    fp16, the real RetinaFace weights (inputs in 0-255, mean-subtracted) neither. (TF32 on CUDA:
    tests/models/test_gpu.py.)"""
    from restora.models.engines import probe_inputs

    rt = runtime(Settings(home=tmp_path / "home", models=setup[0]), "auto")
    gfpgan = rt.load("tiny-gfpgan")
    half = rt.engines._gpu_torch(gfpgan)
    assert half.precision == "fp16"
    assert next(gfpgan.module.parameters()).dtype == torch.float16  # converted, not copied
    detector = rt.load("retinaface-mobilenet0.25-facelibcfg")
    with pytest.warns(RuntimeWarning, match="outside the face-detection bound in fp16: "
                                            r"max \|d\| .*; bf16: max \|d\| .*; it runs in fp32"):
        kept = rt.engines._gpu_torch(detector)
    assert kept.precision == "fp32"
    assert next(detector.module.parameters()).dtype == torch.float32
    ref = make(setup, "torch").load("retinaface-mobilenet0.25-facelibcfg")
    example = probe_inputs(detector, detector.inputs())
    for a, b in zip(kept.run(example), ref.run(example)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the untouched float32 weights
    # an explicit engine never tries half precision
    forced = runtime(Settings(home=tmp_path / "home2", models=setup[0]), "torch")
    assert forced.engines._gpu_torch(forced.load("tiny-gfpgan")).precision == "fp32"


def test_release_memory_gives_buffers_back_and_runs_again(setup: tuple[Path, Path]) -> None:
    """Runtime.release_memory lets every loaded network's engine give back the buffers it keeps
    between runs; the next run allocates them again and gives the same output. An engine busy
    with a run in another thread keeps them (OpenVINO refuses) instead of failing."""
    import threading

    rt = make(setup, "openvino")
    parser, upscaler = rt.load("tiny-parsenet"), rt.load("tiny-realesrgan-x2")
    x = faces(parser.input_size, 2)
    tile = np.random.default_rng(1).uniform(0, 1, (1, 3, 768, 768)).astype(np.float32)
    want, want_up = parser(x), upscaler(tile)
    assert parser.engine_name == upscaler.engine_name == "openvino"
    rt.release_memory()
    np.testing.assert_array_equal(parser(x), want)
    errors: list[BaseException] = []

    def busy() -> None:
        try:
            for _ in range(3):
                np.testing.assert_array_equal(upscaler(tile), want_up)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    while worker.is_alive():
        rt.release_memory()  # during the upscaler's runs: refused quietly, never raised
    worker.join()
    assert not errors
    rt.release_memory()
    np.testing.assert_array_equal(upscaler(tile), want_up)


def test_release_memory_drops_torch_weights_an_exported_graph_does_not_need(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Where an exported graph serves a restorer, parser or upscaler on the CPU (or none was
    built yet), release_memory drops its torch weights (shapes stay); they are read again from
    the file when an export or an accuracy check needs them, with the same results as never
    dropping. A detector keeps them (its decoding is torch code), and so does every network of
    a runtime that runs torch eager."""
    rt = make(setup, "openvino")
    gfpgan, parser = rt.load("tiny-gfpgan"), rt.load("tiny-parsenet")
    detector = rt.load("retinaface-mobilenet0.25-facelibcfg")
    codeformer = rt.load("tiny-codeformer")
    x = faces(gfpgan.input_size, 2)
    xp, xc = faces(parser.input_size, 2), faces(codeformer.input_size, 2)
    want = gfpgan(x, generator=torch.Generator().manual_seed(3))
    want_parse = parser(xp)
    detector(np.zeros((64, 64, 3), np.uint8))
    sides = gfpgan.noise_sides()
    rt.release_memory()
    for net in (gfpgan, parser, codeformer):  # codeformer: loaded, its engine not built yet
        assert all(p.is_meta for p in net.module.parameters()), net.model_id
    assert not any(p.is_meta for p in detector.module.parameters())
    assert gfpgan.noise_sides() == sides
    np.testing.assert_array_equal(gfpgan(x, generator=torch.Generator().manual_seed(3)), want)
    np.testing.assert_array_equal(parser(xp), want_parse)
    got_cf = codeformer(xc, fidelity=0.5)  # built from its file's cache entry or exported
    # an export needs the weights again: read from the file, the same graph as without a drop
    onnx = rt.engines.exported(gfpgan, "onnxruntime", "fp32")
    assert not any(p.is_meta for p in gfpgan.module.parameters())
    fresh = on_cache(tmp_path, setup[0], tmp_path / "fresh-cache", "openvino")
    ref = fresh.load("tiny-gfpgan")
    noise = [n.numpy() for n in ref.extra_inputs(x, generator=torch.Generator().manual_seed(3))]
    np.testing.assert_array_equal(
        onnx.run([x, *noise])[0],
        fresh.engines.exported(ref, "onnxruntime", "fp32").run([x, *noise])[0])
    np.testing.assert_array_equal(got_cf, fresh.load("tiny-codeformer")(xc, fidelity=0.5))
    # an export holding the weights in another thread: this job does not wait for it
    import threading

    held, go = threading.Event(), threading.Event()

    def export() -> None:
        with parser.weights():
            held.set()
            go.wait(30)

    worker = threading.Thread(target=export)
    worker.start()
    held.wait(30)
    rt.release_memory()
    assert not any(p.is_meta for p in parser.module.parameters())  # kept for the export
    go.set()
    worker.join()
    rt.release_memory()
    assert all(p.is_meta for p in parser.module.parameters())
    eager = make(setup, "torch", home=tmp_path / "eager")
    net = eager.load("tiny-gfpgan")
    net(x, generator=torch.Generator().manual_seed(3))
    eager.release_memory()
    assert not any(p.is_meta for p in net.module.parameters())


def test_exported_graphs_run_one_image_at_a_time(setup: tuple[Path, Path]) -> None:
    """Batches of faces go through an exported graph one face at a time (no faster batched on
    the CPU, and the engine would keep the largest batch's buffers); an input without the
    batch dimension (CodeFormer's w) goes whole to every face, and the result is the batch's."""
    from restora.models.engines import OneAtATime

    rt = make(setup, "openvino")
    codeformer = rt.load("tiny-codeformer")
    x = faces(codeformer.input_size, 3)
    got = codeformer(x, fidelity=0.3)
    assert isinstance(codeformer.engine, OneAtATime)
    ref = make(setup, "torch").load("tiny-codeformer")(x, fidelity=0.3)
    ok, measure = policy_for("face-restoration").check([np.asarray(ref)], [got])
    assert ok, measure
    one = np.concatenate([codeformer(x[i:i + 1], fidelity=0.3) for i in range(3)])
    np.testing.assert_array_equal(got, one)


def _runs(compiled: Any) -> set[tuple[str, str, str]]:
    """(layer type, runtime precision, output precision) of a compiled OpenVINO graph's
    convolutions and element-wise layers."""
    out = set()
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in ("Convolution", "Eltwise"):
            out.add((kind, info["runtimePrecision"].astype(str),
                     info["outputPrecisions"].astype(str)))
    return out


def test_bf16_with_a_float32_stream_adds_the_residuals_in_float32(setup: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """bf16-fp32stream exports RRDBNet as three graphs, stem, trunk and finish, each compiled
    for bf16: the trunk runs every convolution in bf16 and every residual add in float32 (they
    lead to its output through element-wise nodes only), so the stream it passes on is float32.
    In the one bf16 graph of the same network those adds run bf16. The result is torch's within
    bf16's error, and a damaged entry is rebuilt."""
    _needs_bf16()
    from restora.models.engines import OneAtATime, StreamGraphs

    manifest, _ = setup
    cache = tmp_path / "cache"
    rt = on_cache(tmp_path, manifest, cache, "auto")
    net = rt.load("tiny-realesrgan-x2")
    engine, meta = rt.engines._load(net, "openvino", STREAM, True, lambda m: True)
    assert meta["cpu_s"] > 0 and meta["measure"].startswith("PSNR")
    folder = next(cache.rglob("meta.json")).parent
    assert sorted(json.loads((folder / "meta.json").read_text())["files"]) == sorted(
        f"{part}.{ext}" for part in ("stem", "trunk", "finish") for ext in ("xml", "bin"))
    assert isinstance(engine, OneAtATime) and isinstance(engine.inner, StreamGraphs)
    graphs = engine.inner
    assert (graphs.name, graphs.precision) == ("openvino", STREAM)

    ran = _runs(graphs.trunk.compiled)
    assert {p for k, p, _ in ran if k == "Convolution"} == {"bf16"}, ran
    assert ("Eltwise", "f32", "f32") in ran, ran
    assert not any(k == "Eltwise" and "bf16" in (p, o) for k, p, o in ran), ran
    x = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
    stream = graphs.trunk.run([graphs.stem.run([x])[0]])[0]
    assert np.mean(stream.view(np.uint32) & 0xFFFF != 0) > 0.9  # float32 values, not bf16 ones
    one, _ = rt.engines._load(net, "openvino", "bf16", True, lambda m: True)
    assert ("Eltwise", "bf16", "bf16") in _runs(one.inner.compiled)

    out = engine.run([x])[0]
    with torch.inference_mode():
        ref = net.module(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape
    mse = np.mean((np.clip(out, 0, 1) - np.clip(ref, 0, 1)) ** 2)
    assert 10 * np.log10(1 / mse) > 40  # bf16 convolutions (the probe's bound decides use)

    (folder / "trunk.bin").write_bytes(b"damaged")
    again, _ = on_cache(tmp_path, manifest, cache, "auto").engines._load(
        net, "openvino", STREAM, True, lambda m: True)
    np.testing.assert_array_equal(again.run([x])[0], out)


def test_lama_runs_on_openvino_converted_from_torch(tmp_path: Path) -> None:
    """LaMa's FFT layers do not export to ONNX, so OpenVINO converts the torch module itself:
    its fp32 graph reproduces torch on real photo crops at any size (free sides and batch), and
    the fill's wrapper gives the same pixels. ``auto`` tries only bf16, only on AMX CPUs (fp32
    runs no faster than torch), and keeps it by its verdict; ONNX Runtime falls back to torch."""
    from tiny_models import tiny_photo_repair_entries

    from restora.pipeline.photo.learned import lama_inpaint, lama_preprocess

    manifest = write_tiny_manifest(tmp_path, include=set(),
                                   extra=tiny_photo_repair_entries(scratch=False))
    settings = Settings(home=tmp_path / "home", models=manifest, engine_cache=tmp_path / "c")
    ref = runtime(settings, "torch").load("tiny-lama")
    net = runtime(settings, "openvino").load("tiny-lama")
    photo = np.ascontiguousarray(
        cv2.imread(str(shared_path("testdata", "photos", "06.png")))[:, :, ::-1])
    policy = policy_for("inpainting")
    crops = []
    for h, w in [(256, 256), (200, 328), (96, 64)]:
        rgb = photo[40:40 + h, 60:60 + w]
        holes = np.zeros((h, w), bool)
        holes[h // 3:h // 2, w // 4:w // 2] = True
        image, mask = lama_preprocess(rgb, holes)
        x = torch.cat([image * (1 - mask), mask], 1).numpy()
        got, want = net(x), ref(x)
        assert policy.check([want], [got])[0] and np.abs(got - want).max() < 1e-4, (h, w)
        assert np.abs(lama_inpaint(net, rgb, holes).astype(int)
                      - lama_inpaint(ref, rgb, holes)).max() <= 1
        if w == 64:
            crops = [x[0], x[0][:, ::-1, ::-1]]
    pair = np.ascontiguousarray(np.stack(crops))
    assert np.abs(net(pair) - ref(pair)).max() < 1e-4
    assert (net.engine_name, net.precision) == ("openvino", "fp32")

    plain = runtime(settings, "auto", amx=False).load("tiny-lama")
    plain.prepare()
    assert plain.engine_name == "torch"
    assert list(_entries(tmp_path / "c", "tiny-lama")) == [("openvino", "fp32")]  # the one above
    onnx = runtime(settings, "onnxruntime")
    onnx.load("tiny-lama").prepare()
    assert onnx.load("tiny-lama").engine_name == "torch"
    assert any("does not export to ONNX" in note for note in onnx.engines.notes)

    _needs_bf16()
    amx_rt = runtime(settings, "auto", amx=True)
    amx = amx_rt.load("tiny-lama")
    amx.prepare()
    _, bf16 = _entries(tmp_path / "c", "tiny-lama")["openvino", "bf16"]
    assert "PSNR" in bf16["measure"] and bf16["task"] == "inpainting"
    assert (amx.engine_name, amx.precision) == (("openvino", "bf16") if bf16["ok"]
                                                else ("torch", "fp32"))
    if bf16["ok"]:  # a large job drops the torch weights the graph does not need
        before = amx(pair)
        amx_rt.release_memory()
        assert next(amx.module.parameters()).device.type == "meta"
        assert np.array_equal(amx(pair), before)


def test_closing_an_engine_drops_its_graph_and_reopens_it_from_the_cache(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """``close_engine`` (a large job done with a network) drops the compiled graph and the
    torch weights; the next call reopens the graph from the export cache (no export, no new
    verdict) with the same output. The parser's coarse graphs are looked up again with it; a
    torch engine is kept."""
    manifest, _ = setup
    settings = Settings(home=tmp_path / "home", models=manifest, engine_cache=tmp_path / "c")
    rt = runtime(settings, "auto")
    gfpgan, parser = rt.load("tiny-gfpgan"), rt.load("tiny-parsenet")
    x, xp = faces(gfpgan.input_size, 1), faces(parser.input_size, 1)
    want = gfpgan(x, generator=torch.Generator().manual_seed(3))
    want_parse = parser(xp)
    parser.prepare()
    verdicts = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("meta.json")}
    rt.close_engines(["tiny-gfpgan", "tiny-parsenet", "not-loaded"])
    assert gfpgan.engine is None and parser.engine is None and parser._coarse is None
    assert all(p.is_meta for p in gfpgan.module.parameters())
    np.testing.assert_array_equal(gfpgan(x, generator=torch.Generator().manual_seed(3)), want)
    np.testing.assert_array_equal(parser(xp), want_parse)
    parser.prepare()
    assert gfpgan.engine_name == "openvino" and parser._coarse is not None
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("meta.json")} == verdicts
    eager = runtime(settings, "torch")
    net = eager.load("tiny-gfpgan")
    net(x, generator=torch.Generator().manual_seed(3))
    engine = net.engine
    eager.close_engines(["tiny-gfpgan"])
    assert net.engine is engine and not any(p.is_meta for p in net.module.parameters())


def test_an_engine_cache_that_cannot_be_created_exports_to_a_temporary_folder_once_warned(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """RESTORA_HOME (or RESTORA_ENGINE_CACHE) on a regular file: the library and the service
    had a NotADirectoryError traceback from the cache when a fast engine built its graph (the
    CLI checks beforehand). Now the graph is exported into a temporary folder of the runtime's
    own, with one warning (log, RuntimeWarning, the engine notes), and nothing is written
    where the cache should be; the folder goes with the runtime. Under a file, so that root
    cannot create it either."""
    import gc

    manifest, _ = setup
    (tmp_path / "a-file").write_text("not a folder")
    cache = tmp_path / "a-file" / "engines"
    rt = on_cache(tmp_path, manifest, cache, "onnxruntime")
    x = np.full((1, 3, 16, 16), 0.5, np.float32)
    with pytest.warns(RuntimeWarning, match=r"engine cache .* cannot be written \(Not a "
                                            r"directory\): graphs are exported into a "
                                            r"temporary folder"):
        out = rt.load("tiny-realesrgan-x2")(x)
    assert rt.load("tiny-realesrgan-x2").engine_name == "onnxruntime"
    assert out.shape == (1, 3, 32, 32)
    rt.load("tiny-parsenet").prepare()  # a second graph: no second warning
    assert rt.load("tiny-parsenet").engine_name == "onnxruntime"
    assert len(rt.engines.notes) == 1 and str(cache) in rt.engines.notes[0]
    assert (tmp_path / "a-file").read_text() == "not a folder"
    scratch = rt.engines._scratch.root
    assert len(list(scratch.rglob("meta.json"))) == 2
    # the same output as a runtime on a cache that works
    np.testing.assert_array_equal(out, make(setup, "onnxruntime").load("tiny-realesrgan-x2")(x))
    del rt
    gc.collect()
    assert not scratch.exists()


def _as_user() -> list[str]:
    """The command prefix that runs a child without root's right to write anywhere (root
    ignores a folder's mode): empty for other users; skips where it cannot be dropped."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root writes into read-only folders; dropping CAP_DAC_OVERRIDE needs "
                    "setpriv")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


_RUN_X2 = ("import json, sys, warnings\n"
           "import numpy as np\n"
           "from pathlib import Path\n"
           "from restora.config import Settings\n"
           "from restora.models.runtime import Runtime\n"
           "rt = Runtime(Settings(home=Path(sys.argv[1]), models=Path(sys.argv[2]), "
           "engine_cache=Path(sys.argv[3])), device='cpu', engine='onnxruntime')\n"
           "with warnings.catch_warnings(record=True):\n"
           "    net = rt.load('tiny-realesrgan-x2')\n"
           "    out = net(np.full((1, 3, 16, 16), 0.5, np.float32))\n"
           "print(json.dumps({'engine': net.engine_name, 'shape': list(out.shape), "
           "'sum': float(out.sum()), 'notes': rt.engines.notes}))\n")


def _run_x2(tmp_path: Path, manifest: Path, cache: Path) -> dict[str, Any]:
    proc = subprocess.run([*_as_user(), sys.executable, "-c", _RUN_X2, str(tmp_path / "home"),
                           str(manifest), str(cache)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_read_only_engine_cache_is_used_as_it_is_and_never_a_traceback(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    """A read-only cache (chmod 0o555; a read-only mount alike): an empty one was a
    PermissionError traceback (its hash memo, lock or export could not be written). Now an
    entry prepared ahead is used as it is, without a lock and without a warning; an entry
    missing or corrupt there is exported into a temporary folder with one warning, and the
    read-only entry is left untouched."""
    manifest, _ = setup
    want = _run_x2(tmp_path, manifest, tmp_path / "writable")  # the reference, cache written
    empty = tmp_path / "empty"
    empty.mkdir()
    prepared = tmp_path / "prepared"
    on_cache(tmp_path, manifest, prepared, "onnxruntime").load("tiny-realesrgan-x2").prepare()
    for lock in prepared.rglob("*.lock"):  # as a cache copied into an image would be
        lock.unlink()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(prepared, corrupt)
    (graph,) = corrupt.rglob("graph.onnx")
    graph.write_bytes(graph.read_bytes()[:100])
    trees = (empty, prepared, corrupt)
    before = {root: sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                           for p in root.rglob("*")) for root in trees}
    for root in trees:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        runs = {root: _run_x2(tmp_path, manifest, root) for root in trees}
    finally:
        for root in trees:
            for p in [root, *root.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
    for root, got in runs.items():
        assert {k: got[k] for k in ("engine", "shape", "sum")} == \
            {k: want[k] for k in ("engine", "shape", "sum")}, root
    assert runs[prepared]["notes"] == []
    for root in (empty, corrupt):
        (note,) = runs[root]["notes"]
        assert f"the engine cache {root} cannot be written (Permission denied)" in note
    assert {root: sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in root.rglob("*")) for root in trees} == before
