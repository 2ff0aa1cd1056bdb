import os

from noisystudent.cli import main

code = main()
try:
    world = int(os.environ.get("WORLD_SIZE") or 1)
except ValueError:
    world = 1
if world > 1:  # one process of a torchrun group: leave without interpreter shutdown (see exit_worker)
    from noisystudent.distributed import exit_worker

    exit_worker(code)
raise SystemExit(code)
