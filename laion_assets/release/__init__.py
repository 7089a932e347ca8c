"""What a release holds and how it leaves: KV, manifest, dataset card, galleries, plots, Hub, verify, rebuild."""
