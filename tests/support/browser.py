"""A real app process (``streamlit run``, headless, on a free port) and a headless Chromium to open it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.data import REPO, free_port

APP = str(REPO / "app" / "main.py")
have_chromium = bool(shutil.which("chromium") and shutil.which("chromedriver"))
needs_chromium = pytest.mark.skipif(not have_chromium, reason="Debian chromium + chromium-driver not installed")


def start_app(app_args, cwd: Path, env: dict):
    """(process, url) of `streamlit run app/main.py -- app_args`, once its health check answers."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--",
            *app_args,
        ],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    return proc, url


def stop_app(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def headless_chromium(profile: Path, window: str = "1600,1400"):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={window}",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


@contextmanager
def streamlit_in_chromium(app_args, tmp_path: Path, window: str = "1600,1400"):
    """The app (``start_app``) and a headless Chromium for it: yields (driver, base url); both stop on exit."""
    proc, url = start_app(app_args, tmp_path, dict(os.environ, PYTHONPATH=str(REPO)))
    driver = None
    try:
        driver = headless_chromium(tmp_path / "chrome", window)
        yield driver, url
    finally:
        if driver is not None:
            driver.quit()
        stop_app(proc)
