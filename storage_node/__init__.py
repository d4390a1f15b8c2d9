"""neoarray storage node: partitions of object records on LMDB, locks, conflicts."""
