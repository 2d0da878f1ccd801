"""RQ worker entry point: `python worker.py [--burst]`, the same as `crm worker`."""

import sys

from crm import create_app
from crm.worker import run_worker

if __name__ == "__main__":
    run_worker(create_app(), burst="--burst" in sys.argv[1:])
