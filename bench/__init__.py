"""Trainyard's benchmarks: platform overhead, checkpoint cost, recovery, control-plane scale
and the storage path, each measured against its baseline in the same run (`make bench`)."""
