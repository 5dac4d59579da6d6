import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # so test files can `from helpers import Case`
