"""``python -m dqd_server`` is the ``dqd`` command."""
from .cli import main

main()
