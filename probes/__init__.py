"""Protocol-aware probes: one module per protocol, a pure codec and a thin
async probe on the shared connection layer (:mod:`probes.net`)."""
