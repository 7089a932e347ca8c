"""Assets of the LAION-Aesthetics graph, one module per family."""
