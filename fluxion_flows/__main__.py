"""``python -m fluxion_flows`` is the ``fluxion`` command."""

from fluxion_flows.cli import main

main()
