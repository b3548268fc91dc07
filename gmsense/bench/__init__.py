"""The measuring sticks: ``gmsense bench accuracy`` (detection against synthetic truth) and
``gmsense bench speed`` (throughput against the machine and a peer)."""
