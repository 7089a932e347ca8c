"""Front ends that build sample data and run the graph on it (the sample, the local and URL demos)."""
