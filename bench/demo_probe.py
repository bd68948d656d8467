"""Probe the demo app as a careful user would: start the real server (``skinlesion demo``) on a free
127.0.0.1 port, send it bad inputs (corrupt, truncated, damaged-middle, tiny, huge, non-image) and a burst of
requests from several client threads (a few rounds), and record each answer, whether it kept serving and
its memory (RSS of the server process) after each step. Writes ``bench/results/demo-probe-<date>.json``
and prints a table.

    uv run python bench/demo_probe.py                     # a fresh light_cnn checkpoint at 150x200
    uv run python bench/demo_probe.py --model models/mobilenetv2_v1_12_0.781.h5 --burst 50 --threads 5

Traffic goes to 127.0.0.1 only, in bounded loops with timeouts; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import psutil

from helpers.core import config
from helpers.core.atomic import atomic_write_text

STARTUP_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120
INPUT_SIZE = config.DEFAULT_IMAGE_SIZE


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lesion_image() -> np.ndarray:
    """A real HAM10000 image (BGR) when the data are found, else a smooth synthetic one."""
    root = config.ham10000_root()
    if root is not None:
        first = sorted((root / "HAM10000_images_part_1").glob("*.jpg"))[0]
        return cv2.imread(str(first))
    rows, cols = np.mgrid[0:450, 0:600]
    return np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)


def make_inputs(folder: Path) -> dict[str, Path]:
    """The probe's files: a good image and each kind of bad input, written into ``folder``."""
    image = _lesion_image()
    good = folder / "good.jpg"
    cv2.imwrite(str(good), image)
    data = good.read_bytes()
    scan = data.index(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    middle = (start + len(data)) // 2
    files = {
        "good": good,
        "corrupt (random bytes as .jpg)": (folder / "corrupt.jpg", np.random.default_rng(0).bytes(5000)),
        "truncated JPEG": (folder / "truncated.jpg", data[: len(data) // 2]),
        "damaged-middle JPEG": (folder / "damaged.jpg", data[:middle] + bytes(300) + data[middle + 300 :]),
        "non-image (.txt)": (folder / "notes.txt", b"just some text"),
    }
    for name, entry in list(files.items()):
        if isinstance(entry, tuple):
            entry[0].write_bytes(entry[1])
            files[name] = entry[0]
    cv2.imwrite(str(folder / "tiny.png"), image[:1, :1])
    files["tiny 1x1 PNG"] = folder / "tiny.png"
    cv2.imwrite(str(folder / "huge.jpg"), cv2.resize(image, (6000, 4500)))
    files["huge 6000x4500 JPEG"] = folder / "huge.jpg"
    return files


def make_checkpoint(folder: Path) -> Path:
    """A randomly initialised light_cnn checkpoint at 150x200 (the probe tests robustness, not accuracy)."""
    from helpers.models.build import build_model
    from helpers.models.checkpoints import save_checkpoint

    model = build_model("light_cnn", weights=None, input_size=INPUT_SIZE)
    return save_checkpoint(model, folder / "light_cnn_v1_01_0.500.h5", {"split_file": None})


def start_server(checkpoint: Path, port: int) -> subprocess.Popen:
    """``skinlesion demo`` in its own process, once its page answers."""
    command = [
        sys.executable,
        "-m",
        "helpers.apps.cli",
        "demo",
        "--model",
        str(checkpoint),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the demo server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError(f"the demo server did not answer within {STARTUP_TIMEOUT_S} s")


def rss_mb(process: subprocess.Popen) -> float:
    """Resident memory of the server and its children, in MB (10**6 bytes)."""
    root = psutil.Process(process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6


def ask(url: str) -> Callable[[Path], str]:
    """A function sending one file to the demo's /predict and returning its answer as one line."""
    import gradio_client

    client = gradio_client.Client(url, verbose=False, httpx_kwargs={"timeout": REQUEST_TIMEOUT_S})

    def predict(path: Path) -> str:
        try:
            label, p_malignant, decision, _ = client.predict(
                gradio_client.handle_file(str(path)), api_name="/predict"
            )
        except gradio_client.exceptions.AppError as error:
            return f"error: {error}"
        return f"{label['label']}; P(malignant) {p_malignant}; {decision}".replace("\n", " | ")

    return predict


def probe(model: Path | None, burst: int, threads: int, rounds: int) -> dict:
    """Run every probe, then ``rounds`` bursts, against a fresh server and return the record."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = model or make_checkpoint(folder)
        files = make_inputs(folder)
        port = _free_port()
        server = start_server(checkpoint, port)
        url = f"http://127.0.0.1:{port}/"
        try:
            predict = ask(url)
            predict(files["good"])  # warm-up: the first request builds the graph
            rss_start = rss_mb(server)
            answers = {}
            for name, path in files.items():
                started = time.perf_counter()
                answers[name] = {"answer": predict(path), "seconds": round(time.perf_counter() - started, 2)}
            rss_after_probes = rss_mb(server)
            rotation = [files[name] for name in ("good", "damaged-middle JPEG", "tiny 1x1 PNG", "good")]
            jobs = [rotation[index % len(rotation)] for index in range(burst)]
            clients = [ask(url) for _ in range(threads)]
            bursts = []
            for _ in range(rounds):
                started = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    results = list(pool.map(lambda job: clients[job[0] % threads](job[1]), enumerate(jobs)))
                bursts.append(
                    {
                        "requests": burst,
                        "threads": threads,
                        "answered": sum(bool(result) for result in results),
                        "predictions": sum(not result.startswith("error") for result in results),
                        "clear_errors": sum(result.startswith("error: Unusable image") for result in results),
                        "seconds": round(time.perf_counter() - started, 1),
                        "rss_mb_after": round(rss_mb(server), 1),
                    }
                )
            alive = predict(files["good"])
            record = {
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
                "checkpoint": checkpoint.name,
                "probes": answers,
                "bursts": bursts,
                "serving_after_bursts": not alive.startswith("error"),
                "rss_mb": {"after_warm_up": round(rss_start, 1), "after_probes": round(rss_after_probes, 1)},
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
    return record


def main(argv: list[str] | None = None) -> Path:
    """Run the probe, print its table and write the JSON record; returns the JSON path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: a fresh light_cnn)")
    parser.add_argument("--burst", type=int, default=50, help="requests in the burst (default: 50)")
    parser.add_argument("--threads", type=int, default=5, help="client threads of the burst (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts, one after the other (default: 3)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: bench/results/...)")
    args = parser.parse_args(argv)
    record = probe(args.model, args.burst, args.threads, args.rounds)
    for name, result in record["probes"].items():
        print(f"{name:32} {result['seconds']:6.2f} s  {result['answer'][:150]}")
    print(f"server RSS (MB): {json.dumps(record['rss_mb'])}")
    for burst in record["bursts"]:
        print(f"burst: {json.dumps(burst)}")
    print(f"serving after the bursts: {record['serving_after_bursts']}")
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    output = args.output or config.BENCH_RESULTS_DIR / f"demo-probe-{date}.json"
    return atomic_write_text(output, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    print(f"Wrote {main()}")
