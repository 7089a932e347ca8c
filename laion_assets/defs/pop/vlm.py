"""The vision-language model resource of ``pop_captions``: which LLaVA, where, how precise, how it is asked."""

import os
from functools import lru_cache

import dagster as dg
from pydantic import Field

from laion_assets.core.paths import resolve
from laion_assets.pop.captioning import DEFAULT_VLM, LAION_POP_PROMPT, TRIM_PREFIX, LoadedVlm, VlmSpec, load_vlm


@lru_cache(maxsize=2)
def _cached(spec: VlmSpec) -> LoadedVlm:
    # One model per process and spec: every shard a run worker captions reuses it.
    return load_vlm(spec)


class VlmResource(dg.ConfigurableResource):
    """LLaVA 1.5 (llava-hf/llava-1.5-7b-hf by default, as LAION captioned LAION-POP) loaded once per process."""

    model: str = Field(
        default=DEFAULT_VLM,
        description="a Hugging Face model name (read from the HF cache when offline) or a local folder in llava-hf's "
        "layout, e.g. from `huggingface-cli download llava-hf/llava-1.5-7b-hf --local-dir models/llava-1.5-7b-hf`",
    )
    device: str = Field(default="auto", description="auto (cuda when available), cuda or cpu")
    precision: str = Field(default="auto", description="auto (fp16 on cuda, fp32 on cpu), fp32, fp16 or bf16")
    batch_size: int = Field(default=8, description="images per generate call; halved on CUDA out-of-memory")
    max_new_tokens: int = Field(default=512, description="most tokens generated per caption (greedy decoding)")
    prompt: str = Field(default=LAION_POP_PROMPT, description="the question asked of every image (LAION-POP's)")
    trim_prefix: str = Field(
        default=TRIM_PREFIX, description="removed from the start of each answer, as LAION did; empty keeps answers"
    )
    chunk_rows: int = Field(default=256, description="captions per resumable chunk written while a shard runs")

    def spec(self) -> VlmSpec:
        """The model spec; a model naming an existing folder (relative: from the project folder) is that folder."""
        local = resolve(self.model)
        model = os.path.normpath(local) if local.is_dir() else self.model
        return VlmSpec(model, self.device, self.precision, self.max_new_tokens, self.prompt, self.trim_prefix)

    def load(self) -> LoadedVlm:
        """The loaded model (built on the first call in this process)."""
        return _cached(self.spec())
