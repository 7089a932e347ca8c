"""LAION-POP: high-resolution images selected by concept and aesthetics, captioned in detail with LLaVA 1.5."""
