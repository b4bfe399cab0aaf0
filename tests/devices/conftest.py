import sys
from pathlib import Path

# device_audit.py (the audit these tests and bench/gpu_check.sh share) lives beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
