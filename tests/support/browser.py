"""A real app process (``streamlit run``, headless, on a free port) and a headless Chromium to open it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.cli import repo_env
from support.data import REPO, free_port

APP = str(REPO / "app" / "main.py")
have_chromium = bool(shutil.which("chromium") and shutil.which("chromedriver"))
needs_chromium = pytest.mark.skipif(not have_chromium, reason="Debian chromium + chromium-driver not installed")


def start_app(app_args, cwd: Path, env: dict, attempts: int = 3):
    """(process, url) of `streamlit run app/main.py -- app_args`, once its health check answers.

    The app's output is read all along by a thread (an unread pipe fills up and then blocks the app in its next
    log call) and kept in ``process.output`` for failure messages. An app that exits while starting (its port
    taken in the meantime by another process of the suite) is started again on another port.
    """
    for _ in range(attempts):
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
            text=True,
            errors="replace",
            start_new_session=True,
        )
        output: deque = deque(maxlen=400)
        threading.Thread(target=lambda p=proc, o=output: o.extend(p.stdout), daemon=True).start()
        proc.output = output  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                return proc, url
            except OSError:
                time.sleep(0.5)
        if proc.poll() is None:
            stop_app(proc)
            raise RuntimeError(f"the app did not answer its health check in 180 s:\n{app_output(proc)}")
    raise RuntimeError(f"the app exited while starting, {attempts} times; last output:\n{app_output(proc)}")


def app_output(proc, lines: int = 60) -> str:
    """The last lines the app printed (for a failing test's message)."""
    return "".join(list(getattr(proc, "output", []))[-lines:])


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
    proc, url = start_app(app_args, tmp_path, repo_env())
    driver = None
    try:
        driver = headless_chromium(tmp_path / "chrome", window)
        driver.app_process = proc  # for app_output(driver.app_process) in a failing test's message
        yield driver, url
    finally:
        if driver is not None:
            driver.quit()
        stop_app(proc)
