"""From URLs to embeddings: bounded downloads (img2dataset), image reading, the CLIP model, embedding parts."""
