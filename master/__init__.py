"""neoarray master: OIDs, TIDs, partition table, cluster state, commit order."""
