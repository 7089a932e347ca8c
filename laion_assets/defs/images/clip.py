"""The CLIP model resource: which open_clip model, its weights, device, precision, batch size and loader workers."""

from functools import lru_cache

import dagster as dg
from pydantic import Field

from laion_assets.core.paths import resolve
from laion_assets.images.clip_model import ClipSpec, LoadedClip, load_clip


@lru_cache(maxsize=2)
def _cached(spec: ClipSpec) -> LoadedClip:
    # One model per process and spec: every shard a run worker embeds reuses it.
    return load_clip(spec)


class ClipResource(dg.ConfigurableResource):
    """An open_clip model (OpenAI ViT-L/14 by default, as LAION used) loaded once per process on first use."""

    model: str = Field(default="ViT-L-14", description="open_clip model name, or a path to a model-config .json")
    pretrained: str = Field(
        default="openai", description="pretrained tag, a local weights file, or 'none' for random weights"
    )
    device: str = Field(default="auto", description="auto (cuda when available), cuda or cpu")
    precision: str = Field(default="auto", description="auto (fp16 on cuda, fp32 on cpu), fp32, fp16 or bf16")
    batch_size: int = Field(default=256, description="images per forward pass; halved on CUDA out-of-memory")
    num_workers: int = Field(default=2, description="DataLoader processes decoding images")
    embed_text: bool = Field(default=True, description="also write text_emb (caption embeddings), as clip-retrieval")

    def spec(self) -> ClipSpec:
        """The model spec, with relative file paths taken from the project folder."""
        model = str(resolve(self.model)) if self.model.endswith(".json") else self.model
        pretrained = self.pretrained
        if any(pretrained.endswith(ext) for ext in (".bin", ".pt", ".pth", ".safetensors")):
            pretrained = str(resolve(pretrained))
        return ClipSpec(model, pretrained, self.device, self.precision)

    def load(self) -> LoadedClip:
        """The loaded model (built on the first call in this process)."""
        return _cached(self.spec())
