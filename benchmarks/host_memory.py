"""What keeping freed host memory (embed/extraction/host_memory.py) does to CPU extraction: speed, kernel time, peak
resident size, and whether the vectors are the same.

    python -m benchmarks.host_memory [--rounds 2] [--limit 1000] [--out benchmarks/results/cpu-2core/host-memory-DATE.json]

Each round runs `python -m embed extract` on the first --limit Tiny-ImageNet val images, in fresh processes and
interleaved, once with RETRIEVAL_KEEP_FREED_MEMORY=0 (glibc's defaults) and once with the default (kept), for
EfficientNet-Lite0 (real weights) and GResNet-50 (seeded random weights: no real ones here, the cost is the same).
Per run: the extraction's own images/s, and the process's user and system CPU seconds, minor page faults and peak
RSS from wait4. Reported: medians per setting and the ratio kept / defaults, and whether both settings wrote
bit-identical vectors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from benchmarks import REPO, cpu_model, cpu_result_path
from embed.extraction.shards import EmbeddingStore

MODELS = {"effnet-lite0": [], "gresnet": ["--random-init"]}
SETTINGS = {"defaults": "0", "kept": "1"}


def extract_once(model: str, setting: str, data_root: Path, limit: int, out: Path) -> Dict[str, float]:
    cmd = [sys.executable, "-m", "embed", "extract", "--model", model, *MODELS[model], "--split", "val"]
    cmd += ["--data-root", str(data_root), "--limit", str(limit), "--out", str(out), "--no-progress", "--force"]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", RETRIEVAL_KEEP_FREED_MEMORY=SETTINGS[setting])
    # output to files, not pipes: the child is reaped with wait4 (its own rusage), never by communicate()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr.read()[-2000:]}")
        summary = json.loads(stdout.read().strip().splitlines()[-1])
    return {
        "images_per_s": summary["images_per_s"],
        "folder": summary["folder"],
        "user_s": round(usage.ru_utime, 2),
        "sys_s": round(usage.ru_stime, 2),
        "minor_faults": usage.ru_minflt,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default %(default)s)")
    p.add_argument("--limit", type=int, default=1000, help="images per run (default %(default)s)")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets" / "tiny-imagenet-200")
    p.add_argument("--out", type=Path, default=cpu_result_path("host-memory"), help="JSON result file")
    args = p.parse_args(argv)
    runs: Dict[str, Dict[str, List[Dict[str, float]]]] = {m: {s: [] for s in SETTINGS} for m in MODELS}
    identical: Dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="host-memory-") as scratch:
        for _ in range(args.rounds):
            for model in MODELS:
                for setting in SETTINGS:
                    out = Path(scratch) / setting
                    runs[model][setting].append(extract_once(model, setting, args.data_root, args.limit, out))
                    print(model, setting, runs[model][setting][-1], flush=True)
            for model in MODELS:
                got = [EmbeddingStore(Path(str(runs[model][s][-1]["folder"]))).load(args.limit)[1] for s in SETTINGS]
                identical[model] = identical.get(model, True) and bool(np.array_equal(got[0], got[1]))
    keys = ("images_per_s", "user_s", "sys_s", "minor_faults", "peak_rss_mib")
    median = {
        m: {s: {k: round(statistics.median(r[k] for r in rs), 2) for k in keys} for s, rs in per.items()}
        for m, per in runs.items()
    }
    result = {
        "benchmark": "host_memory",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min": os.getloadavg()[0],
        },
        "rounds": args.rounds,
        "images": args.limit,
        "runs": {m: {s: [{k: r[k] for k in keys} for r in rs] for s, rs in per.items()} for m, per in runs.items()},
        "median": median,
        "kept_over_defaults": {
            m: {k: round(v["kept"][k] / v["defaults"][k], 3) for k in keys if v["defaults"][k]}
            for m, v in median.items()
        },
        "vectors_identical": identical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"kept_over_defaults": result["kept_over_defaults"], "vectors_identical": identical}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
