"""Data tests: make the tiny-dataset writers (tests/data/tiny_datasets.py) importable."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
