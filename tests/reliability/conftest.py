import sys
from pathlib import Path

# helpers such as make_tiny_layout live in tests/conftest.py; its fixtures apply here without importing them
# (re-exporting them would create a second session-scoped Milvus server)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
