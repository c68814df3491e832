import sys
from pathlib import Path

# the reliability suite shares the fixtures of tests/conftest.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import *  # noqa: E402,F401,F403
