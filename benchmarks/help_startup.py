"""How long `--help` takes, as a ratio to importing torch and timm, measured in the same run.

    python -m benchmarks.help_startup [--rounds 5] [--out benchmarks/results/cpu-2core/help-startup-DATE.json]

Each round times, in fresh interpreters and interleaved (so that machine load hits all alike):
`python -m indexer --help`, `python -m embed --help` and `python -c "import torch, timm"`.
Reported: the median of each and the ratio of the medians; the target is help <= 1/3 of the import.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1 / 3
COMMANDS = {
    "indexer_help": [sys.executable, "-m", "indexer", "--help"],
    "embed_help": [sys.executable, "-m", "embed", "--help"],
    "import_torch_timm": [sys.executable, "-c", "import torch, timm"],
}


def time_once(cmd) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu-2core" /
                   f"help-startup-{dt.date.today().isoformat()}.json", help="JSON result file")
    args = p.parse_args(argv)
    for cmd in COMMANDS.values():  # warm the page cache: the first run of each reads its files from disk
        time_once(cmd)
    seconds = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            seconds[name].append(time_once(cmd))
    median = {name: statistics.median(v) for name, v in seconds.items()}
    base = median["import_torch_timm"]
    ratios = {name: median[name] / base for name in ("indexer_help", "embed_help")}
    result = {
        "benchmark": "help_startup", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1min": os.getloadavg()[0]},
        "rounds": args.rounds, "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "ratio_to_import_torch_timm": {k: round(v, 3) for k, v in ratios.items()},
        "target_ratio": round(TARGET_RATIO, 3), "meets_target": all(r <= TARGET_RATIO for r in ratios.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"median_s": result["median_s"], "ratio": result["ratio_to_import_torch_timm"],
                      "meets_target": result["meets_target"], "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
