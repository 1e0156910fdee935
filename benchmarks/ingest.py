"""Ingest benchmark: careshare's upload throughput against a raw copy-with-hash, and its memory.

Run from the repository root::

    .venv/bin/python benchmarks/ingest.py [--size-mib 512] [--repeat 3] [--keep] [--cold]
        [--no-recycle] [--quiet-wait 120] [--dir DIR]

For each repetition it writes a fresh test file (a valid PDF whose one embedded file is
``size`` MiB of random bytes: pikepdf opens it in well under a millisecond, the PDF handler's
sanitised copy drops the embedded file, and the bytes cannot be deduplicated), then measures,
in the same run:

(a) the baseline: copy the file to the data disk in 1 MiB reads, SHA-256 on the fly, fsync;
(b) careshare: ``POST /v1/patients/{pid}/files`` with the file streamed from disk as a raw body
    (Content-Length set, 1 MiB chunks) to ``careshare serve`` running as a separate process,
    timed from the first byte sent to the 201 response (stage, identify, pikepdf, database
    rows, promote and its fsync all included);
(c) the ratio careshare / baseline;
(d) the server's peak RSS growth during the upload: VmRSS sampled every 20 ms from
    /proc/<pid>/status, peak minus the value right before the upload (the kernel's VmHWM,
    reset through /proc/<pid>/clear_refs, is printed too as a cross-check).

Each repetition waits (up to ``--quiet-wait`` seconds) for other work to leave the CPUs idle,
starts a fresh server and warms it with a small upload. The order of (a) and (b) alternates
between repetitions. By default both read the source file warm (it was just written and
fsynced, so it is in the page cache); ``--cold`` evicts it with ``posix_fadvise(DONTNEED)``
before each of them instead. Before each timed step a same-size file is written and deleted,
so both steps write into recycled memory (see ``Recycler``; ``--no-recycle`` turns that off).
Medians are reported; the targets (ratio >= 0.85, RSS growth <= 64 MiB) are the ones set for a
1 GiB upload. Figures and their discussion: docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
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
from typing import TYPE_CHECKING

import httpx

from careshare.core.storage import content_key
from careshare.testing import bearer, free_port, make_pdf, make_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

MiB = 1024 * 1024
CHUNK = MiB
TARGET_RATIO = 0.85
TARGET_RSS_MIB = 64
SAMPLE_SECONDS = 0.02
REPO = Path(__file__).resolve().parent.parent


# --- the test file -----------------------------------------------------------------------------


def write_test_pdf(path: Path, total: int) -> int:
    """Write a valid PDF of exactly ``total`` bytes: one page and one embedded file of random bytes.

    The xref table is exact, so qpdf reads the trailer and opens the file lazily, never
    scanning the payload. Written in 1 MiB blocks and fsynced, so no writeback is pending.
    """
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(payload.bin) 4 0 R] >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << >> >>",
        b"<< /Type /Filespec /F (payload.bin) /UF (payload.bin) /EF << /F 5 0 R >> >>",
    ]
    head = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(head))
        head += b"%d 0 obj\n%s\nendobj\n" % (number, body)

    def framing(payload: int) -> tuple[bytes, bytes]:
        stream_at = len(head)
        stream_head = b"5 0 obj\n<< /Type /EmbeddedFile /Length %d >>\nstream\n" % payload
        stream_end = b"\nendstream\nendobj\n"
        xref_at = stream_at + len(stream_head) + payload + len(stream_end)
        xref = b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in [*offsets, stream_at])
        trailer = b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
        return stream_head, stream_end + xref + trailer

    payload = total
    for _ in range(3):  # the framing's length depends (barely) on the payload's digit count
        stream_head, tail = framing(payload)
        payload = total - len(head) - len(stream_head) - len(tail)
    stream_head, tail = framing(payload)
    with path.open("wb") as handle:
        handle.write(head)
        handle.write(stream_head)
        left = payload
        while left:
            block = min(left, CHUNK)
            handle.write(os.urandom(block))
            left -= block
        handle.write(tail)
        handle.flush()
        os.fsync(handle.fileno())
    size = path.stat().st_size
    assert size == total, (size, total)
    return size


def check_test_pdf(path: Path) -> float:
    """Open the file as the PDF handler does; returns the seconds pikepdf took."""
    import pikepdf

    started = time.perf_counter()
    with pikepdf.open(path) as pdf:
        assert len(pdf.pages) == 1
        warnings = pdf.get_warnings()
    seconds = time.perf_counter() - started
    assert not warnings, warnings
    return seconds


def evict(path: Path) -> None:
    """Drop a clean file's pages from the page cache (no root needed for one's own file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- (a) the baseline ----------------------------------------------------------------------------


def baseline_copy(src: Path, dst: Path) -> tuple[float, str]:
    """Copy ``src`` to ``dst`` in 1 MiB reads, hashing on the fly, then fsync file and directory."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    started = time.perf_counter()
    with src.open("rb", buffering=0) as reader, dst.open("wb", buffering=0) as writer:
        while n := reader.readinto(buffer):
            block = view[:n]
            digest.update(block)
            writer.write(block)
        os.fsync(writer.fileno())
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return time.perf_counter() - started, digest.hexdigest()


# --- the server ----------------------------------------------------------------------------------


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class RssSampler:
    """Samples a process's VmRSS every 20 ms in a thread and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))


def reset_hwm(pid: int) -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of ``pid``; False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def server_command() -> list[str]:
    script = Path(sys.executable).parent / "careshare"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from careshare.host.cli import main; main()"]


@contextlib.contextmanager
def careshare_server(data_dir: Path, secret: str, max_upload: int, log: Path) -> Iterator[tuple[str, int]]:
    """``careshare serve`` on a free port as a separate process; yields (base URL, pid)."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        CARESHARE_DATA_DIR=str(data_dir),
        CARESHARE_SECRET_KEY=secret,
        CARESHARE_MAX_UPLOAD_BYTES=str(max_upload),
    )
    env.pop("CARESHARE_DATABASE_URL", None)
    env.pop("CARESHARE_STORAGE_URL", None)
    with log.open("ab") as log_file:
        proc = subprocess.Popen(
            [*server_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"the server exited with {proc.returncode}:\n" + "\n".join(tail))
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /healthz within 60 s; see {log}")
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- (b) the upload ------------------------------------------------------------------------------


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=0) as handle:
        while block := handle.read(CHUNK):
            yield block


def upload(client: httpx.Client, url: str, path: Path, size: int, headers: dict[str, str]) -> tuple[float, dict]:
    request_headers = {
        **headers,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{path.name}",
        # The check waited for, as before checks left the request path (benchmarks/checks.py times the 202).
        "Prefer": "wait=30",
    }
    started = time.perf_counter()
    response = client.post(url, content=file_chunks(path), headers=request_headers)
    seconds = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:500]}")
    return seconds, response.json()


# --- one repetition ------------------------------------------------------------------------------


def mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


class Recycler:
    """Writes and deletes a file of the measured size right before each timed step.

    On a VM whose balloon reports free pages to the host (virtio-balloon free page reporting),
    page cache written into memory the VM has not touched recently costs a host page fault per
    page: on the machine of docs/performance.md that adds about 2 s per GiB to whichever step
    gets such memory, at random. Pages freed a moment ago are reused at once, so each step
    starts right after this file is deleted and both steps write into recycled memory, as they
    would on a machine without free page reporting.
    """

    def __init__(self, work: Path, size: int, *, enabled: bool) -> None:
        self.path = work / "recycle"
        self.size = size
        self.enabled = enabled

    def prepare(self) -> None:
        if not self.enabled:
            return
        zeros = bytes(CHUNK)
        with self.path.open("wb", buffering=0) as handle:
            for _ in range(-(-self.size // CHUNK)):
                handle.write(zeros)
            os.fsync(handle.fileno())
        self.path.unlink()


def run_once(work: Path, rep: int, size: int, recycler: Recycler, *, cold: bool) -> dict[str, float]:
    data_dir = work / f"data-{rep}"
    data_dir.mkdir()
    source = work / f"source-{rep}.pdf"
    write_test_pdf(source, size)
    open_seconds = check_test_pdf(source)
    secret = secrets.token_urlsafe(32)
    settings = make_settings(data_dir, CARESHARE_SECRET_KEY=secret)
    clinician = bearer(settings, "clinician", "bench-org", sub="bench-clinician")
    result: dict[str, float] = {"pikepdf_open_ms": open_seconds * 1000}
    digests: dict[str, str] = {}

    with (
        careshare_server(data_dir, secret, 2 * size, work / "server.log") as (base, pid),
        httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as client,
    ):
        created = client.post(
            "/v1/patients", json={"name": "Bench Patient", "external_id": f"BENCH-{rep}"}, headers=clinician
        )
        created.raise_for_status()
        files_url = f"/v1/patients/{created.json()['id']}/files"
        warm = client.post(
            files_url,
            content=make_pdf(2),
            headers={**clinician, "Content-Type": "application/pdf"},
            params={"filename": "warm-up.pdf"},
        )
        if warm.status_code != 201:
            raise RuntimeError(f"warm-up upload answered {warm.status_code}: {warm.text[:500]}")

        def do_baseline() -> None:
            if cold:
                evict(source)
            copy = data_dir / "baseline-copy"
            recycler.prepare()
            result["baseline_s"], digests["baseline"] = baseline_copy(source, copy)
            copy.unlink()

        def do_upload() -> None:
            if cold:
                evict(source)
            time.sleep(0.2)  # let the server settle before reading its resting RSS
            recycler.prepare()
            before = rss_kib(pid)
            hwm_reset = reset_hwm(pid)
            with RssSampler(pid) as sampler:
                seconds, body = upload(client, files_url, source, size, clinician)
            result["careshare_s"] = seconds
            result["rss_before_mib"] = before / 1024
            result["rss_growth_mib"] = (sampler.peak - before) / 1024
            result["rss_samples"] = sampler.samples
            if hwm_reset:
                result["hwm_growth_mib"] = (rss_kib(pid, "VmHWM") - before) / 1024
            digests["careshare"] = body["sha256"]
            result["check_ms"] = float((body.get("check") or {}).get("duration_ms") or 0.0)
            if body["size"] != size:
                raise RuntimeError(f"server stored {body['size']} bytes, sent {size}")
            # The stored blob is benchmark data the server will not read again.
            (data_dir / "blobs" / content_key(body["sha256"])).unlink()

        steps = [do_baseline, do_upload] if rep % 2 == 0 else [do_upload, do_baseline]
        for step in steps:
            step()

    if digests["baseline"] != digests["careshare"]:
        raise RuntimeError("careshare's SHA-256 differs from the baseline's")
    source.unlink()
    result["baseline_mbps"] = mb_per_s(size, result["baseline_s"])
    result["careshare_mbps"] = mb_per_s(size, result["careshare_s"])
    result["ratio"] = result["careshare_mbps"] / result["baseline_mbps"]
    return result


# --- main ----------------------------------------------------------------------------------------


def cpu_busy(seconds: float = 1.0) -> float:
    """The fraction of the machine's CPU time that was busy during the next ``seconds``."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_quiet(max_seconds: float, threshold: float = 0.1) -> float:
    """Wait (up to ``max_seconds``) for a second in which other work keeps the CPUs under ``threshold`` busy."""
    deadline = time.monotonic() + max_seconds
    while True:
        busy = cpu_busy()
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(device, mount point, type) of the filesystem holding ``path``, from /proc/self/mounts."""
    best = ("?", "/", "?")
    resolved = str(path.resolve())
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            device, mount_point, fs_type, *_ = line.split()
            inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[1]):
                best = (device, mount_point, fs_type)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="size of the uploaded file in MiB (default 512)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and the server log")
    parser.add_argument(
        "--cold", action="store_true", help="evict the source file from the page cache before each read"
    )
    parser.add_argument(
        "--no-recycle",
        action="store_true",
        help="do not write and delete a same-size file before each step (see Recycler)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="seconds to wait, before each repetition, for other work to leave the CPUs idle (default 120)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=REPO.parent,
        help="where the temporary data directory goes (default: beside the repo)",
    )
    args = parser.parse_args(argv)

    device, mount_point, fs_type = filesystem_of(args.dir)
    if fs_type in {"tmpfs", "ramfs"}:
        parser.error(f"{args.dir} is on {fs_type}: the benchmark must write to a real disk")
    size = args.size_mib * MiB
    free = shutil.disk_usage(args.dir).free
    if free < 3 * size + 512 * MiB:
        parser.error(f"{args.dir} has {free / MiB:,.0f} MiB free; {3 * size / MiB:,.0f} MiB are needed")
    work = Path(tempfile.mkdtemp(prefix="careshare-bench-", dir=args.dir))

    print(f"careshare ingest benchmark  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"  file       {args.size_mib} MiB PDF (random embedded payload), {args.repeat} repetition(s)")
    print(f"  data disk  {work} on {device} ({fs_type}, mounted at {mount_point})")
    print(f"  cache      source file read {'cold (posix_fadvise DONTNEED)' if args.cold else 'warm (in page cache)'}")
    print("  server     careshare serve (separate process), raw body, Content-Length, 1 MiB chunks")
    recycling = "not prepared" if args.no_recycle else "a same-size file is written and deleted before each timed step"
    print(f"  memory     {recycling}")
    print(f"  machine    {os.cpu_count()} CPUs; 'busy' is the CPU use by other work in the second before each rep")
    print()
    header = (
        f"{'rep':>3}  {'busy':>4}  {'baseline MB/s':>13}  {'careshare MB/s':>14}  {'ratio':>5}"
        f"  {'RSS +MiB':>8}  {'HWM +MiB':>8}"
    )
    print(header)
    results = []
    try:
        recycler = Recycler(work, size, enabled=not args.no_recycle)
        for rep in range(args.repeat):
            busy = wait_quiet(args.quiet_wait)
            r = run_once(work, rep, size, recycler, cold=args.cold)
            r["busy"] = busy
            results.append(r)
            hwm = f"{r['hwm_growth_mib']:8.1f}" if "hwm_growth_mib" in r else f"{'n/a':>8}"
            print(
                f"{rep + 1:>3}  {busy:4.0%}  {r['baseline_mbps']:13.1f}  {r['careshare_mbps']:14.1f}  {r['ratio']:5.2f}"
                f"  {r['rss_growth_mib']:8.1f}  {hwm}",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    ratio, growth = median("ratio"), median("rss_growth_mib")
    worst_growth = max(r["rss_growth_mib"] for r in results)
    print()
    print(f"(a) baseline   copy + SHA-256 + fsync  {median('baseline_mbps'):8.1f} MB/s  (median)")
    print(f"(b) careshare  HTTP ingest             {median('careshare_mbps'):8.1f} MB/s  (median)")
    print(f"(c) ratio      careshare / baseline    {ratio:8.2f}       target >= {TARGET_RATIO}")
    print(
        f"(d) server RSS growth (peak - before)  {growth:8.1f} MiB   target <= {TARGET_RSS_MIB} MiB"
        f"  (worst {worst_growth:.1f} MiB, resting RSS {median('rss_before_mib'):.0f} MiB)"
    )
    print(
        f"    of the upload, {median('check_ms'):.0f} ms were the file check (identify + handler process);"
        f" pikepdf opens the test file in {median('pikepdf_open_ms'):.1f} ms. MB = 10^6 bytes"
    )
    if max(r["busy"] for r in results) >= 0.1:
        print("    WARNING: other work was running on this machine during the run; the figures are noisy")
    met_ratio, met_rss = ratio >= TARGET_RATIO, worst_growth <= TARGET_RSS_MIB
    print(
        f"targets: ratio {'met' if met_ratio else 'NOT met'}, RSS {'met' if met_rss else 'NOT met'}"
        + ("" if args.size_mib == 1024 else "  (the targets are set for a 1 GiB upload: --size-mib 1024)")
    )
    return 0 if met_ratio and met_rss else 1


if __name__ == "__main__":
    sys.exit(main())
