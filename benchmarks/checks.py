"""Checks benchmark (issue 9): acknowledgement and time to ready of large uploads, and many at once.

Run from the repository root::

    .venv/bin/python benchmarks/checks.py [--sizes 256,1024] [--kinds pdf,video] [--repeat 1]
        [--parallel 64] [--skip-large] [--skip-parallel] [--dir DIR]

**Large uploads** (for each size and kind, in one run, each step on a fresh server):

(a) the baseline: a bare Litestar handler (uvicorn, the same httptools/uvloop) that streams the
    request body, hashes it (SHA-256), writes it to the data disk and fsyncs it, then answers;
(b) careshare's acknowledgement: ``careshare serve --no-worker`` (SQLite, local disk) answers
    ``POST /v1/patients/{pid}/files`` with ``Prefer: respond-async``: ``202`` once the bytes are
    durable and the file row is written. Ratio (a)/(b) time: the target is >= 0.85.
(c) time to ``ready``: a ``careshare worker`` in a process of its own checks the file; from the
    first byte sent to ``GET /v1/files/{id}`` saying ``ready`` (polled every 20 ms). The bare
    library doing the handler's output is timed in the same run (pikepdf open + save with the
    handler's options; PyAV remux of every packet with ``+faststart``). Target: ready <= 1.5 x
    (acknowledgement + bare library).
Before each timed side, as many bytes as it will write are written and deleted (``recycle``).

(d) the API process's RSS growth during the upload (VmRSS every 20 ms; target <= 64 MiB for
    1 GiB) and its CPU seconds per GiB acknowledged (utime + stime from /proc).

The inputs make the real work grow with the size: the PDF is one page drawing one unfiltered
image of random bytes (the handler must carry it into the shareable copy); the video is 1920x1080
H.264 (a ramp with noise, about 30 Mbit/s), one encoded second repeated with moving timestamps
until the size is reached (the handler remuxes every packet and moves the index first).

**Parallel mixed uploads**: a throwaway PostgreSQL cluster and a moto S3 server on loopback,
two ``careshare serve --no-worker`` processes and two ``careshare worker`` processes, each with
a data directory of its own (no disk shared: blobs in the bucket). ``--parallel`` uploads (small
PDFs, 12 MP JPEGs, short videos, DICOM; every file different) go one after the other
(single-stream), then all at once, round-robin over the two API processes; each is followed to
``ready``. Printed: errors, p50/p95 time to ready, aggregate throughput against single-stream
(target >= 0.7).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from careshare.testing import bearer, free_port, make_pdf, make_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

MiB = 1024 * 1024
CHUNK = MiB
REPO = Path(__file__).resolve().parent.parent
TARGET_ACK = 0.85
TARGET_READY = 1.5
TARGET_PARALLEL = 0.7
TARGET_RSS_MIB = 64


# --- inputs ----------------------------------------------------------------------------------------


def write_pdf(path: Path, total: int) -> int:
    """One page drawing an unfiltered RGB image of random pixels (``benchmarks/handlers.py``'s scan)."""
    _handlers().write_scan_pdf(path, total)
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    return path.stat().st_size


def _gop(frames: int = 30, size: tuple[int, int] = (1920, 1080)) -> bytes:
    """One second of 1080p30 H.264 as an MP4 in memory: a keyframe, then P-frames, as phones write.

    The pictures are a ramp with noise, four in turn, so every frame costs bits (about 30 Mbit/s).
    """
    import av
    import numpy as np

    rng = np.random.default_rng(9)
    width, height = size
    ramp = (np.mgrid[0:height, 0:width][1] // 8 % 200).astype(np.uint8)[..., np.newaxis].repeat(3, axis=2)
    pictures = [ramp + rng.integers(0, 24, ramp.shape, dtype=np.uint8) for _ in range(4)]
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23", "x264-params": f"keyint={frames}:bframes=0"}
        for index in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pictures[index % 4], format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def write_video(path: Path, total: int) -> int:
    """A 1080p H.264 MP4 of about ``total`` bytes: one encoded second repeated with moving timestamps."""
    import av

    gop = _gop()
    with av.open(io.BytesIO(gop)) as source:
        template = source.streams.video[0]
        packets = [p for p in source.demux(template) if p.size]
        span = max(int(p.pts) + int(p.duration or 0) for p in packets) - min(int(p.pts) for p in packets)
        gop_bytes = sum(p.size for p in packets)
        with av.open(str(path), "w", format="mp4") as output:
            stream = output.add_stream_from_template(template)
            repeats = max(1, total // gop_bytes)
            for repeat in range(repeats):
                for packet in packets:
                    copy = av.Packet(bytes(packet))
                    copy.pts = packet.pts + repeat * span
                    copy.dts = packet.dts + repeat * span
                    copy.duration = packet.duration
                    copy.time_base = packet.time_base
                    copy.is_keyframe = packet.is_keyframe
                    copy.stream = stream
                    output.mux(copy)
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    return path.stat().st_size


# --- the bare library doing the handler's output --------------------------------------------------


def _handlers() -> Any:
    """benchmarks/handlers.py, for the handler's own PDF save options and the bare video pipeline."""
    sys.path.insert(0, str(Path(__file__).parent))
    import handlers

    return handlers


def bare_pdf(src: Path, out: Path) -> float:
    """pikepdf open + save with the options the handler picks for this file, and the page-1 thumbnail."""
    handlers = _handlers()
    run = handlers.bare_pdf(src, handlers.pdf_save_options(src))
    started = time.perf_counter()
    run(out.parent)
    return time.perf_counter() - started


def bare_video(src: Path, out: Path) -> float:
    """PyAV remux of every packet with +faststart, the poster frame at 10 %, its JPEG and thumbnail."""
    run = _handlers().bare_video(src)
    started = time.perf_counter()
    run(out.parent)
    return time.perf_counter() - started


INPUTS = {"pdf": (write_pdf, bare_pdf, "bench.pdf"), "video": (write_video, bare_video, "bench.mp4")}


# --- the bare Litestar handler (run as a process of its own) --------------------------------------


def bare_server(port: int, directory: Path) -> None:
    """Serve ``POST /upload``: stream, hash, write, fsync, answer. Nothing else."""
    import uvicorn
    from litestar import Litestar, Request, post

    @post("/upload", request_max_body_size=None, status_code=201)
    async def upload(request: Request[Any, Any, Any]) -> dict[str, Any]:
        digest = hashlib.sha256()
        path = directory / secrets.token_hex(8)
        size = 0
        with path.open("wb") as handle:
            async for chunk in request.stream():
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        path.unlink()
        return {"sha256": digest.hexdigest(), "size": size}

    uvicorn.run(Litestar([upload]), host="127.0.0.1", port=port, log_config=None, access_log=False)


# --- processes -------------------------------------------------------------------------------------


def _careshare() -> list[str]:
    script = Path(sys.executable).parent / "careshare"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from careshare.host.cli import main; main()"]


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], log: Path, health: str | None = None) -> Iterator[int]:
    """A process (and its children) for the block; waits for ``health`` to answer 200; yields its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while health is not None:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(command[-3:])} exited with {proc.returncode}; its log ends:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(health, timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health} did not answer; see {log}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def careshare_env(data_dir: Path, secret: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARESHARE_")}
    # The benchmark's tokens name the organisation "bench": allowed without `careshare org create`.
    env.update(CARESHARE_DATA_DIR=str(data_dir), CARESHARE_SECRET_KEY=secret, CARESHARE_ORGS="bench", **extra)
    return env


class RssSampler:
    """Peak VmRSS of a process, read every 20 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as handle:
        while block := handle.read(CHUNK):
            yield block


def send(client: httpx.Client, url: str, path: Path, headers: dict[str, str]) -> tuple[float, httpx.Response]:
    size = path.stat().st_size
    started = time.perf_counter()
    response = client.post(
        url, content=file_chunks(path), headers={**headers, "Content-Length": str(size), "Content-Type": "x/y"}
    )
    return time.perf_counter() - started, response


# --- large uploads ---------------------------------------------------------------------------------


def recycle(work: Path, size: int) -> None:
    """Write and delete ``size`` bytes right before a timed step, so it writes into recycled memory.

    On this VM page cache written into memory the guest has not touched lately costs a host page
    fault per page (docs/performance.md, "Memory on this VM"): whichever side got such memory
    would pay about 2 s per GiB at random. Each side's writes land in pages freed a moment ago.
    """
    path = work / "recycle"
    zeros = bytes(CHUNK)
    with path.open("wb", buffering=0) as handle:
        for _ in range(-(-size // CHUNK)):
            handle.write(zeros)
        os.fsync(handle.fileno())
    path.unlink()


def large(work: Path, kind: str, size: int) -> dict[str, float]:
    write, bare, name = INPUTS[kind]
    source = work / name
    actual = write(source, size)
    result: dict[str, float] = {"size_mib": actual / MiB}
    bare_dir = work / "bare-library"
    bare_dir.mkdir()
    recycle(work, 2 * actual)
    result["bare_library_s"] = bare(source, bare_dir / name)
    shutil.rmtree(bare_dir)

    # (a) the bare Litestar handler
    port, folder = free_port(), work / "bare"
    folder.mkdir()
    command = [sys.executable, __file__, "--bare-server", str(port), "--dir", str(folder)]
    with process(command, dict(os.environ), work / "bare.log", f"http://127.0.0.1:{port}/none"):
        with httpx.Client(timeout=900) as client:
            seconds, response = send(client, f"http://127.0.0.1:{port}/upload", source, {})
        response.raise_for_status()
        result["baseline_s"] = seconds
        bare_sha = response.json()["sha256"]
    shutil.rmtree(folder)

    # (b)-(d) careshare: API without a worker, then a worker process of its own
    data = work / "careshare"
    secret = secrets.token_urlsafe(24)
    env = careshare_env(data, secret, CARESHARE_MAX_UPLOAD_BYTES=str(2 * actual), CARESHARE_WORKERS="0")
    settings = make_settings(data, CARESHARE_SECRET_KEY=secret)
    clinician = bearer(settings, "clinician", "bench", sub="bench")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [*_careshare(), "serve", "--no-worker", "--port", str(port)]
    worker = [*_careshare(), "worker", "--concurrency", "1"]
    with (
        process(serve, env, work / "serve.log", f"{base}/healthz") as pid,
        process(worker, env, work / "worker.log"),
        httpx.Client(base_url=base, timeout=900) as client,
    ):
        patient = client.post("/v1/patients", json={"name": "B", "external_id": "B"}, headers=clinician).json()["id"]
        url = f"/v1/patients/{patient}/files?filename={name}"
        warm = client.post(url, content=make_pdf(2), headers={**clinician, "Prefer": "wait=30"})
        if warm.status_code != 201:  # and the worker, its handler processes ready, is idle again
            raise RuntimeError(f"warm-up upload answered {warm.status_code}: {warm.text[:300]}")
        time.sleep(0.5)
        recycle(work, 3 * actual)  # the upload, the shareable copy and what the handler writes on the way
        rss_before, cpu_before = rss_kib(pid), cpu_seconds(pid)
        first_byte = time.perf_counter()
        with RssSampler(pid) as sampler:
            seconds, response = send(client, url, source, {**clinician, "Prefer": "respond-async"})
        if response.status_code != 202:
            raise RuntimeError(f"careshare answered {response.status_code}: {response.text[:300]}")
        result["ack_s"] = seconds
        result["api_cpu_s_per_gib"] = (cpu_seconds(pid) - cpu_before) / (actual / 1024**3)
        result["rss_growth_mib"] = (sampler.peak - rss_before) / 1024
        fid = response.json()["id"]
        if response.json()["sha256"] != bare_sha:
            raise RuntimeError("careshare's SHA-256 differs from the baseline's")
        while True:
            shown = client.get(f"/v1/files/{fid}", headers=clinician).json()
            if shown["status"] != "processing":
                break
            time.sleep(0.02)
        result["ready_s"] = time.perf_counter() - first_byte
        if shown["status"] != "ready":
            raise RuntimeError(f"the file ended {shown['status']}: {shown['check']}")
        result["handler_s"] = float(shown["check"].get("handler_ms") or 0) / 1000
        result["check_s"] = float(shown["check"].get("duration_ms") or 0) / 1000
    shutil.rmtree(data)
    source.unlink()
    result["ack_ratio"] = result["baseline_s"] / result["ack_s"]
    result["ready_ratio"] = result["ready_s"] / (result["ack_s"] + result["bare_library_s"])
    return result


# --- parallel mixed uploads ------------------------------------------------------------------------


def mixed_files(directory: Path, count: int) -> list[Path]:
    """``count`` different files: small PDFs, 12 MP JPEGs, short videos and DICOM, in turn."""
    import av
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(12)
    base = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8).repeat(1, 0), "RGB")
    dicom = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    files = []
    for n in range(count):
        kind = n % 4
        if kind == 0:
            path = directory / f"{n}.pdf"
            path.write_bytes(make_pdf(pages=2, text=f"leaflet {n}"))
        elif kind == 1:
            path = directory / f"{n}.jpg"
            image = base.copy()
            image.putpixel((n, n), (n % 256, 0, 0))
            image.save(path, quality=85)
        elif kind == 2:
            path = directory / f"{n}.mp4"
            with av.open(str(path), "w") as container:
                stream = container.add_stream("libx264", rate=30)
                stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
                stream.options = {"preset": "ultrafast"}
                for i in range(45):
                    pixels = np.full((360, 640, 3), (n * 7 + i * 5) % 256, dtype=np.uint8)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        else:
            path = directory / f"{n}.dcm"
            dicom.SOPInstanceUID = generate_uid()
            dicom.save_as(path)
        files.append(path)
    return files


async def _to_ready(client: httpx.AsyncClient, base: str, path: Path, headers: dict[str, str], url: str) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"{base}{url}?filename={path.name}", content=path.read_bytes(), headers={**headers, "Prefer": "wait=0"}
    )
    if response.status_code not in (201, 202):
        raise RuntimeError(f"{path.name}: {response.status_code} {response.text[:200]}")
    fid = response.json()["id"]
    while True:
        shown = (await client.get(f"{base}/v1/files/{fid}", headers=headers)).json()
        if shown["status"] == "ready":
            return time.perf_counter() - started
        if shown["status"] == "rejected":
            raise RuntimeError(f"{path.name}: rejected {shown['check'].get('reason')}")
        await asyncio.sleep(0.05)


def parallel(work: Path, count: int) -> dict[str, float]:
    from careshare.testing import PostgresCluster, find_postgres_bin
    from careshare.testing.s3 import MotoS3

    if find_postgres_bin() is None:
        raise RuntimeError("the parallel run needs PostgreSQL's initdb and pg_ctl")
    files = mixed_files(work, count)
    total = sum(p.stat().st_size for p in files)
    cluster, moto = PostgresCluster(), MotoS3()
    cluster.start()
    moto.start()
    try:
        url = cluster.create_database("bench")
        secret = secrets.token_urlsafe(24)
        shared = {
            **moto.env,
            "CARESHARE_DATABASE_URL": url,
            "CARESHARE_STORAGE_URL": moto.storage_url("bench"),
            "CARESHARE_WORKERS": "0",
        }
        settings = make_settings(work / "token", CARESHARE_SECRET_KEY=secret)
        clinician = bearer(settings, "clinician", "bench", sub="bench")
        with contextlib.ExitStack() as stack:
            bases = []
            for n in range(2):
                port = free_port()
                env = careshare_env(work / f"api-{n}", secret, **shared)
                command = [*_careshare(), "serve", "--no-worker", "--port", str(port)]
                stack.enter_context(process(command, env, work / f"api-{n}.log", f"http://127.0.0.1:{port}/healthz"))
                bases.append(f"http://127.0.0.1:{port}")
            for n in range(2):
                env = careshare_env(work / f"worker-{n}", secret, **shared)
                stack.enter_context(process([*_careshare(), "worker", "--concurrency", "2"], env, work / f"w{n}.log"))

            async def run() -> dict[str, float]:
                async with httpx.AsyncClient(timeout=600) as client:
                    made = await client.post(
                        f"{bases[0]}/v1/patients", json={"name": "B", "external_id": "B"}, headers=clinician
                    )
                    url = f"/v1/patients/{made.json()['id']}/files"
                    started = time.perf_counter()
                    single = [await _to_ready(client, bases[n % 2], p, clinician, url) for n, p in enumerate(files)]
                    single_s = time.perf_counter() - started
                    # The same files again: careshare checks every upload, stored bytes or not.
                    started = time.perf_counter()
                    outcomes = await asyncio.gather(
                        *(_to_ready(client, bases[n % 2], p, clinician, url) for n, p in enumerate(files)),
                        return_exceptions=True,
                    )
                    wall = time.perf_counter() - started
                errors = [o for o in outcomes if isinstance(o, BaseException)]
                times = sorted(o for o in outcomes if isinstance(o, float))
                for error in errors[:5]:
                    print(f"  error: {error}")
                return {
                    "files": count,
                    "mib": total / MiB,
                    "errors": len(errors),
                    "single_p50_s": statistics.median(single),
                    "p50_s": statistics.median(times) if times else float("nan"),
                    "p95_s": times[max(0, int(len(times) * 0.95) - 1)] if times else float("nan"),
                    "single_mib_s": total / MiB / single_s,
                    "parallel_mib_s": total / MiB / wall,
                }

            result = asyncio.run(run())
    finally:
        moto.stop()
        cluster.stop()
    result["throughput_ratio"] = result["parallel_mib_s"] / result["single_mib_s"]
    return result


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,1024", help="sizes in MiB of the large uploads (default 256,1024)")
    parser.add_argument("--kinds", default="pdf,video", help="kinds of the large uploads (pdf, video)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of each large upload (medians)")
    parser.add_argument("--parallel", type=int, default=64, help="uploads of the parallel run (default 64)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-parallel", action="store_true")
    parser.add_argument("--dir", type=Path, default=REPO.parent, help="where data goes (default: beside the repo)")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        bare_server(args.bare_server, args.dir)
        return 0
    ok = True
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="careshare-bench-checks-") as tmp:
        work = Path(tmp)
        if not args.skip_large:
            print(
                "kind   MiB   baseline  ack     ack-ratio  bare-lib  handler  ready   ready-ratio  rss-MiB  api-CPU-s/GiB"
            )
            for kind in args.kinds.split(","):
                for size in (int(s) for s in args.sizes.split(",")):
                    runs = []
                    for rep in range(args.repeat):
                        folder = work / f"{kind}-{size}-{rep}"
                        folder.mkdir()
                        runs.append(large(folder, kind, size * MiB))
                        shutil.rmtree(folder)
                    r = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                    print(
                        f"{kind:6} {r['size_mib']:5.0f} {r['baseline_s']:7.2f}s {r['ack_s']:6.2f}s"
                        f" {r['ack_ratio']:8.2f}  {r['bare_library_s']:7.2f}s {r['handler_s']:6.2f}s {r['check_s']:6.2f}s"
                        f" {r['ready_s']:6.2f}s"
                        f" {r['ready_ratio']:10.2f}  {r['rss_growth_mib']:7.1f}  {r['api_cpu_s_per_gib']:6.2f}",
                        flush=True,
                    )
                    ok &= r["ack_ratio"] >= TARGET_ACK and r["ready_ratio"] <= TARGET_READY
                    ok &= size < 1024 or r["rss_growth_mib"] <= TARGET_RSS_MIB
        if not args.skip_parallel:
            folder = work / "parallel"
            folder.mkdir()
            p = parallel(folder, args.parallel)
            print(
                f"parallel: {p['files']:.0f} files, {p['mib']:.0f} MiB, {p['errors']:.0f} errors;"
                f" time to ready single-stream p50 {p['single_p50_s']:.2f}s, parallel p50 {p['p50_s']:.2f}s"
                f" p95 {p['p95_s']:.2f}s; throughput {p['single_mib_s']:.1f} -> {p['parallel_mib_s']:.1f} MiB/s"
                f" (ratio {p['throughput_ratio']:.2f})"
            )
            ok &= p["errors"] == 0 and p["throughput_ratio"] >= TARGET_PARALLEL
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
