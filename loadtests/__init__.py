"""Swarms of simulated headsets, network impairment, capacity and soak runs."""
