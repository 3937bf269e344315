"""What serving costs on this machine: per-chip overhead of a model server against the same model in-process
(encode + HTTP + decode), bytes on the wire per chip, and throughput with 1, 4 and 8 concurrent clients and the
server's batch sizes reached.

    python benchmarks/serve.py                      # a numpy colour segmenter (256-px chips) and the demo model
    python benchmarks/serve.py --chips 32 --skip-demo

Each server is a real ``segearth-geo serve`` subprocess on 127.0.0.1 (a free port), stopped at the end. Clients are
threads of this process, each with its own :class:`~segearth_geo.serve.client.RemoteSegmenter` (its own client id),
so the figures include the client's encode/decode but not the engine's geo work (~60 Mpx/s, see geo_pipeline.py).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from segearth_geo.prediction import ChipPrediction, Target
from segearth_geo.serve.local import LocalServer as Server
from segearth_geo.serve.wire import encode_request, encode_response

HERE = Path(__file__).resolve()


class ColourSegmenter:
    """No model work: per chip one target per colour, probability = that channel / 255 where it is the largest
    (so the wire carries real, varied probabilities); 256-px chips."""

    chip_size = 256

    def segment(self, chips, prompt):
        found = []
        for chip in chips:
            rgb = np.asarray(chip, dtype=np.float32)
            top = rgb.argmax(axis=2)
            found.append(ChipPrediction("[SEG] [SEG]", [Target(name, np.where(top == k, rgb[..., k] / 255.0, 0.0))
                                                         for k, name in ((0, "red"), (2, "blue"))]))
        return found


def colour() -> ColourSegmenter:
    """The factory the benchmark's server loads (``--model benchmarks/serve.py:colour``)."""
    return ColourSegmenter()


def chips(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def timed(segmenter, size: int, count: int, prompt: str, seed: int, repeat: int = 2) -> float:
    """Best seconds of ``repeat`` calls on fresh chips (no image-cache hits on either side)."""
    best = float("inf")
    for n in range(repeat):
        batch = chips(size, count, seed + n)
        start = time.perf_counter()
        segmenter.segment(batch, prompt)
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(name: str, spec: str, prompt: str, count: int, server_args: list[str]) -> None:
    from segearth_geo import load_segmenter

    local = load_segmenter(spec, device="cpu", batch_size=8)  # the server's forward batch too
    size = local.chip_size
    batch = chips(size, count)
    mb = count * size * size * 3 / 2**20
    print(f"\n== {name}: {count} chips of {size} px ({mb:.1f} MB of pixels), prompt {prompt!r}")
    predictions = local.segment(batch[:2], prompt)
    local.segment(chips(size, count, seed=99), prompt)  # warm-up at the timed batch shape (first calls allocate)
    local_s = timed(local, size, count, prompt, seed=10)
    targets = sum(len(p.targets) for p in predictions) / 2
    request_bytes = sum(len(p) for p in encode_request(batch[:1], [prompt]))
    response = {c: sum(len(p) for p in encode_response([predictions[:1]], 0.5, c)) for c in (False, True)}
    print(f"in-process: {1000 * local_s / count:8.2f} ms/chip ({targets:.1f} targets/chip)")
    print(f"wire per chip: request {request_bytes / 1024:.1f} KiB (raw uint8 RGB), response {response[True] / 1024:.1f} "
          f"KiB zlib / {response[False] / 1024:.1f} KiB raw (float32 would be {targets * size * size * 4 / 1024:.1f} KiB)")
    with Server(spec, "--batch-size", "8", "--max-queue", "512", *server_args, start_timeout=300) as server:
        remote = load_segmenter(server.url)
        remote.segment(chips(size, count, seed=99), prompt)  # warm connections and the model at this batch shape
        remote_s = timed(remote, size, count, prompt, seed=10)  # the same chips, new to the server
        overhead = remote_s - local_s
        print(f"through the server, 1 client: {1000 * remote_s / count:8.2f} ms/chip; overhead "
              f"{1000 * overhead / count:+.2f} ms/chip = {1000 * overhead / mb:+.2f} ms/MB of pixels "
              f"(x{remote_s / local_s:.2f} of in-process)")
        for clients in (1, 4, 8):
            segmenters = [load_segmenter(server.url) for _ in range(clients)]
            work = [chips(size, count, seed=1000 * clients + n) for n in range(clients)]  # no cache hits
            threads = [threading.Thread(target=seg.segment, args=(w, prompt)) for seg, w in zip(segmenters, work)]
            before = served(server)
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - start
            after = served(server)
            sizes = {k: v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()
                     if v - before["batch_sizes"].get(k, 0)}
            print(f"{clients} client(s): {clients * count / seconds:8.1f} chips/s in all; server batch sizes "
                  f"{dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))}; 503s {after['refused'] - before['refused']}")


def served(server: Server) -> dict:
    with urllib.request.urlopen(f"{server.url}/v1/info", timeout=10) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, default=32)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    bench_model("numpy colour segmenter (benchmarks/serve.py:colour)", f"{HERE}:colour", "red and blue", args.chips,
                [])
    if not args.skip_demo:
        bench_model("demo model (SegEarth-R2 demo preset, CPU)", "demo", "all the buildings", max(8, args.chips // 4),
                    ["--device", "cpu"])


if __name__ == "__main__":
    main()
