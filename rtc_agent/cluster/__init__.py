"""Scale-out: workers per core on one node, and many nodes on a Redis registry."""
