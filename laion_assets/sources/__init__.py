"""Reading what LAION published: clip-retrieval layouts, metadata, embedding checks, safety tables, URL shards."""
