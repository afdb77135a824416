"""Run every benchmark (JSON under results/bench/): activation cache and graph convexity."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script, args in (("bench_cache.py", []), ("bench_convexity.py", sys.argv[1:])):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
