"""Falconet's benchmarks: each module runs as `python -m bench.<name>` and prints figures beside a baseline
measured in the same run; `python -m bench` (make bench) runs them all. Figures are recorded in RESULTS.md."""
