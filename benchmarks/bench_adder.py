"""Adder layer benchmark (same as ``slac bench adder``): python benchmarks/bench_adder.py --help"""

import sys

from slac.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "adder", *sys.argv[1:]]))
