"""State sync (SNAPSHOT.md): quantized rigid objects and tissue patches, delta-coded snapshots under a
per-client byte budget with priority accumulators, the client's decoder and the motion predictor.
"""
