"""``python -m stacker_queue``: the stacker-queue command line."""

from .cli import main

main(prog_name="stacker-queue")
