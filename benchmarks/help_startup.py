"""How long `--help` and the commands that need no model take, as a ratio to importing torch and timm, measured
in the same run, and whether each imports torch at all.

    python -m benchmarks.help_startup [--rounds 5] [--out benchmarks/results/cpu-2core/help-startup-DATE.json]

Each round times, in fresh interpreters and interleaved (so that machine load hits all alike):
`python -m indexer --help`, `python -m embed --help`, `python -m embed models`, `python -m indexer status` on an
empty Milvus Lite database (most of it is Lite's own start), `status` on an address nothing listens on, a build with
an unknown model and one with a missing split, and `python -c "import torch, timm"`. Reported: the median of each
and the ratio of the medians (the target for --help is <= 1/3 of the import), and from one `python -X importtime`
run of each command whether torch was imported and the summed import time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from benchmarks import REPO, cpu_result_path

TARGET_RATIO = 1 / 3
HELP = ("indexer_help", "embed_help")


def commands(scratch: Path) -> Dict[str, List[str]]:
    """The timed commands; ``scratch`` holds their empty database and a data root with a val split only."""
    (scratch / "data" / "val").mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    py = [sys.executable]
    return {
        "indexer_help": py + ["-m", "indexer", "--help"],
        "embed_help": py + ["-m", "embed", "--help"],
        "embed_models": py + ["-m", "embed", "models"],
        "indexer_status_empty_lite": py + ["-m", "indexer", "status", "--uri", str(scratch / "empty.db")],
        "indexer_status_refused_address": py + ["-m", "indexer", "status", "--uri", f"http://127.0.0.1:{refused}"],
        "indexer_build_unknown_model": py
        + ["-m", "indexer", "build", "--model", "resnet", "--split", "val", "--data-root", str(scratch / "data")],
        "indexer_build_missing_split": py
        + [
            "-m",
            "indexer",
            "build",
            "--model",
            "effnet-lite0",
            "--split",
            "test",
            "--data-root",
            str(scratch / "data"),
        ],
        "import_torch_timm": py + ["-c", "import torch, timm"],
    }


def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")


def time_once(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def import_profile(cmd) -> Dict[str, object]:
    """From one `python -X importtime` run: whether torch was imported, and the summed self import time."""
    res = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=REPO, env=_env(), capture_output=True, text=True)
    modules, self_us = set(), 0
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            own, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
            modules.add(name)
            self_us += int(own)
    return {
        "imports_torch": "torch" in modules,
        "imports_timm": "timm" in modules,
        "import_time_s": round(self_us / 1e6, 3),
        "modules": len(modules),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    p.add_argument("--label", default="", help="what tree was measured, e.g. a commit (stored in the result)")
    p.add_argument(
        "--out",
        type=Path,
        default=cpu_result_path("help-startup"),
        help="JSON result file",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="help-startup-") as scratch:
        cmds = commands(Path(scratch))
        for cmd in cmds.values():  # warm the page cache: the first run of each reads its files from disk
            time_once(cmd)
        seconds: Dict[str, List[float]] = {name: [] for name in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                seconds[name].append(time_once(cmd))
        imports = {name: import_profile(cmd) for name, cmd in cmds.items()}
    median = {name: statistics.median(v) for name, v in seconds.items()}
    base = median["import_torch_timm"]
    ratios = {name: median[name] / base for name in cmds if name != "import_torch_timm"}
    result = {
        "benchmark": "help_startup",
        "label": args.label,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1min": os.getloadavg()[0],
        },
        "rounds": args.rounds,
        "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "ratio_to_import_torch_timm": {k: round(v, 3) for k, v in ratios.items()},
        "imports": imports,
        "target_ratio": round(TARGET_RATIO, 3),
        "meets_target": all(ratios[h] <= TARGET_RATIO for h in HELP),
        "no_torch": sorted(n for n, i in imports.items() if not i["imports_torch"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                "median_s": result["median_s"],
                "ratio": result["ratio_to_import_torch_timm"],
                "meets_target": result["meets_target"],
                "no_torch": result["no_torch"],
                "out": str(args.out),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
