"""LAION-POP's captions: LLaVA 1.5 with LAION's prompt, greedy, "This image showcases" trimmed from each answer.

LAION's blog post "LAION POP: 600,000 high-resolution images with detailed descriptions" (laion.ai, Nov 17 2023)
gives the model (LLaVA 1.5), the prompt (:data:`LAION_POP_PROMPT`) and the post-processing: "‘This image
showcases’ was trimmed from the beginning of each caption upon generation" (:func:`trim_caption`).

The model is loaded with transformers (``AutoProcessor`` + ``LlavaForConditionalGeneration``, llava-hf's layout) on
first use, never at import. Captioning a shard (:func:`caption_tars`) reads img2dataset's webdataset tars, captions
every decodable image in batches (halved on CUDA out-of-memory) and writes one parquet. It is resumable: every
``chunk_rows`` captions are written atomically to ``<out>.chunks/chunk-NNNNN.parquet``; a rerun takes the rows of
those chunks instead of captioning their images again, and the chunk folder goes once ``out`` is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from laion_assets.core.atomic import write_parquet
from laion_assets.core.errors import BadInputError
from laion_assets.images.clip_model import HalvingBatches, resolve_device, resolve_precision

if TYPE_CHECKING:  # torch, PIL and transformers are imported where they are used: loading the definitions is cheap
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

# The prompt LAION captioned LAION-POP with, verbatim (typographic quotes included). Source: LAION's blog post
# "LAION POP: 600,000 high-resolution images with detailed descriptions", laion.ai/blog, Nov 17 2023.
LAION_POP_PROMPT = (
    "Can you please describe this image in up to two paragraphs? Please specify any objects within the image, "
    "backgrounds, scenery, interactions, and gestures or poses. If they are multiple of any object, please specify "
    "how many. Is there text in the image, and if so, what does it say? If there is any lighting in the image, can "
    "you identify where it is and what it looks like? What style is the image? If there are people or characters in "
    "the image, what emotions are they conveying? Please keep your descriptions factual and terse but complete. DO "
    'NOT add any unnecessary speculation about the things that are not part of the image such as "the image is '
    'inspiring to viewers" or "seeing this makes you feel joy". DO NOT add things such as "creates a unique and '
    'entertaining visual", as these descriptions are interpretations and not a part of the image itself. The '
    "description should be purely factual, with no subjective speculation. Make sure to include the style of the "
    "image, for example cartoon, photograph, 3d render etc. Start with the words \u2018This image showcases\u2019:"
)
# Same source: "‘This image showcases’ was trimmed from the beginning of each caption upon generation."
TRIM_PREFIX = "This image showcases"
DEFAULT_VLM = "llava-hf/llava-1.5-7b-hf"
# LLaVA-1.5's conversation format (llava-hf model cards), used when the processor brings no chat template.
LLAVA_FORMAT = "USER: <image>\n{prompt} ASSISTANT:"

CAPTION_COLUMN = "llava_caption"
RAW_CHARS_COLUMN = "caption_raw_chars"
CAPTION_SCHEMA = pa.schema(
    [("key", pa.string()), ("hash", pa.int64()), (CAPTION_COLUMN, pa.string()), (RAW_CHARS_COLUMN, pa.int32())]
)
# Parquet footer key recording what made the captions (model, prompt, trimming, token budget): chunks made with
# other settings are not resumed from.
CAPTIONER_KEY = "laion_assets.captioner"
CHUNK_GLOB = "chunk-*.parquet"

_QUOTES = "\"'\u2018\u2019\u201c\u201d`"
_AFTER_PREFIX = " \t\r\n:,;.\u2013\u2014-"
_INT64 = (-(2**63), 2**63 - 1)


def trim_caption(text: str, prefix: str = TRIM_PREFIX) -> str:
    """``text`` stripped, without a leading ``prefix`` (any case, quoted or not) and the punctuation after it."""
    text = text.strip()
    if not prefix:
        return text
    body = text.lstrip(_QUOTES)
    quoted = len(body) < len(text)
    if body[: len(prefix)].lower() != prefix.lower():
        return text
    rest = body[len(prefix) :]
    if rest[:1].isalnum() or rest[:1] == "_":  # "This image showcasesX": not the prefix as a phrase
        return text
    if quoted and rest[:1] in _QUOTES:
        rest = rest[1:]
    return rest.lstrip(_AFTER_PREFIX)


@dataclass(frozen=True)
class VlmSpec:
    """Which vision-language model (a Hub name or a local folder), where, how precise, and how it is asked."""

    model: str = DEFAULT_VLM
    device: str = "auto"
    precision: str = "auto"
    max_new_tokens: int = 512
    prompt: str = LAION_POP_PROMPT
    trim_prefix: str = TRIM_PREFIX

    def record(self) -> dict[str, Any]:
        """What decides the captions' text (not where they run): model, prompt sha256, trim prefix, token budget."""
        return {
            "model": self.model,
            "prompt_sha256": hashlib.sha256(self.prompt.encode()).hexdigest(),
            "trim_prefix": self.trim_prefix,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
        }


@dataclass
class LoadedVlm:
    """A ready LLaVA model with its processor and the templated prompt every image is asked with."""

    spec: VlmSpec
    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    prompt_text: str

    def generate(self, images: list[Image.Image]) -> list[str]:
        """The model's answers (whitespace-stripped, not trimmed) for a batch of RGB images, greedy decoding."""
        import torch

        if not images:
            return []
        inputs = self.processor(images=images, text=[self.prompt_text] * len(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        tokenizer = self.processor.tokenizer
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.spec.max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :].cpu()
        return [text.strip() for text in self.processor.batch_decode(new, skip_special_tokens=True)]

    def caption(self, images: list[Image.Image]) -> list[str]:
        """The captions of a batch of RGB images: the model's answers with the spec's prefix trimmed."""
        return [trim_caption(text, self.spec.trim_prefix) for text in self.generate(images)]


def prompt_text(processor: Any, prompt: str) -> str:
    """The prompt in the model's conversation format: its processor's chat template, else LLaVA-1.5's."""
    if getattr(processor, "chat_template", None):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True)
    return LLAVA_FORMAT.format(prompt=prompt)


def _model_help(spec: VlmSpec, exc: BaseException) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    return (
        f"cannot load the vision-language model {spec.model!r}"
        f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {type(exc).__name__}: {str(exc).strip().rstrip('.')}. "
        "Give the vlm resource's `model` as a local folder in llava-hf's layout (config.json, safetensors weights, "
        "processor and tokenizer files), e.g. one made on a machine with access by "
        f"`huggingface-cli download {DEFAULT_VLM} --local-dir models/llava-1.5-7b-hf`, or as a Hub name whose files "
        "are in the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface; fill it once with the same command "
        "without --local-dir and copy it here, then set HF_HUB_OFFLINE=1 to stay offline)."
    )


def _looks_like_path(model: str) -> bool:
    """A Hub name is ``name`` or ``owner/name``; anything else (absolute, ./, ~, deeper) is meant as a folder."""
    return model.startswith((".", "~", "/", os.sep)) or model.count("/") > 1 or "\\" in model or os.path.isabs(model)


def load_vlm(spec: VlmSpec) -> LoadedVlm:
    """Load the LLaVA model and processor of ``spec`` (Hub name or local folder) on its device, in eval mode."""
    import torch

    if spec.max_new_tokens < 1:
        raise BadInputError(f"max_new_tokens must be at least 1, got {spec.max_new_tokens}")
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    folder = Path(spec.model).expanduser()
    if not folder.is_dir() and _looks_like_path(spec.model):
        raise BadInputError(_model_help(spec, FileNotFoundError(f"{folder} is not a folder")))
    source = str(folder) if folder.is_dir() else spec.model
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    try:
        processor = AutoProcessor.from_pretrained(source)
        model = LlavaForConditionalGeneration.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInputError(_model_help(spec, exc)) from exc
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise BadInputError(f"{spec.model}: its processor ({type(processor).__name__}) is not a LLaVA processor")
    processor.tokenizer.padding_side = "left"  # batched generation continues every row from its last token
    model = model.to(device).eval()
    return LoadedVlm(spec, model, processor, device, dtype, prompt_text(processor, spec.prompt))


class BatchCaptioner(HalvingBatches):
    """Apply ``generate`` to batches of images with :class:`HalvingBatches`' out-of-memory halving."""

    def __init__(self, generate: Callable[[list], list[str]], batch_size: int) -> None:
        super().__init__(batch_size, "captioning")
        self.generate = generate

    def _answers(self, chunk: Sequence) -> list[str]:
        answers = self.generate(list(chunk))
        if len(answers) != len(chunk):
            raise BadInputError(f"the captioner returned {len(answers)} answer(s) for {len(chunk)} image(s)")
        return answers

    def __call__(self, images: list) -> list[str]:
        """The answers for ``images``, generated in chunks no bigger than the current batch size."""
        return [answer for answers in self.chunks(images, self._answers) for answer in answers]


@dataclass(frozen=True)
class CaptionedShard:
    """What :func:`caption_tars` wrote: rows, where they came from, what was skipped, and the model's settings."""

    rows: int
    resumed: int
    captioned_now: int
    skipped: int
    skipped_reasons: dict[str, int]
    seconds: float
    batch_size: int
    halvings: int
    model: str
    device: str
    dtype: str

    @property
    def images_per_second(self) -> float:
        """Images captioned in this run per second of this run."""
        return self.captioned_now / self.seconds if self.seconds else 0.0


def chunks_dir(out: Path) -> Path:
    """The folder of an unfinished caption file's finished chunks: ``out`` with the suffix ``.chunks``."""
    return Path(out).with_suffix(".chunks")


def _table(rows: list[tuple[str, int, str, int]]) -> pa.Table:
    keys, hashes, captions, raw = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pa.Table.from_arrays(
        [pa.array(keys, pa.string()), pa.array(hashes, pa.int64()), pa.array(captions, pa.string())]
        + [pa.array(raw, pa.int32())],
        schema=CAPTION_SCHEMA,
    )


def _read_chunks(folder: Path, record: dict) -> dict[str, tuple[str, int, str, int]]:
    """The rows of the finished chunks in ``folder`` by key; chunks made with other settings are removed."""
    if not folder.is_dir():
        return {}
    for stray in folder.glob(".chunk-*.tmp"):  # a write killed before its rename (atomic_path cleans up otherwise)
        stray.unlink(missing_ok=True)
    rows: dict[str, tuple[str, int, str, int]] = {}
    for path in sorted(folder.glob(CHUNK_GLOB)):
        try:
            schema = pq.read_schema(path)
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(
                f"{path}: unreadable caption chunk ({exc}); delete it to caption its images again"
            ) from exc
        made_by = json.loads((schema.metadata or {}).get(CAPTIONER_KEY.encode(), b"null"))
        if made_by != record or table.schema.remove_metadata() != CAPTION_SCHEMA:
            log.warning("%s: caption chunks made with other settings (%s); captioning the shard anew", folder, made_by)
            shutil.rmtree(folder)
            return {}
        for row in zip(*(table.column(name).to_pylist() for name in CAPTION_SCHEMA.names), strict=True):
            rows[row[0]] = row
    return rows


def _sample_hash(meta: dict, tar: Path, key: str) -> int:
    value = meta.get("hash")
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        what = "has no 'hash'" if value is None else f"has a 'hash' that is not an int64 ({value!r})"
        raise BadInputError(f"{tar}: sample {key}'s json {what}; the pop tars carry LAION's int64 hash column")
    return value


def _rgb(image: Image.Image) -> Image.Image:
    return image


def caption_tars(
    tars: Sequence[str | Path],
    loaded: LoadedVlm,
    out: str | Path,
    batch_size: int,
    chunk_rows: int = 256,
    on_chunk: Callable[[int, int], None] | None = None,
) -> CaptionedShard:
    """Caption every decodable image of ``tars`` (in tar order) into one parquet at ``out``, resumably.

    Columns: ``key``, ``hash`` (int64, from each sample's json), ``llava_caption`` (trimmed) and
    ``caption_raw_chars`` (int32, the length of the model's stripped answer before trimming). ``on_chunk(rows
    done, chunk number)`` is called after each chunk is written.
    """
    from laion_assets.images.image_reader import TarImages

    if chunk_rows < 1:
        raise BadInputError(f"chunk_rows must be at least 1, got {chunk_rows}")
    out = Path(out)
    started = time.perf_counter()
    record = loaded.spec.record()
    footer = {CAPTIONER_KEY: json.dumps(record, sort_keys=True)}
    folder = chunks_dir(out)
    earlier = _read_chunks(folder, record)
    existing = sorted(folder.glob(CHUNK_GLOB)) if earlier else []
    next_chunk = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    batcher = BatchCaptioner(loaded.generate, batch_size)
    order: list[str] = []
    seen: dict[str, Path] = {}
    new_rows: dict[str, tuple[str, int, str, int]] = {}
    pending: list[tuple[str, int, Image.Image]] = []
    buffer: list[tuple[str, int, str, int]] = []
    skipped: list[str] = []

    def flush_batch() -> None:
        answers = batcher([image for _, _, image in pending])
        for (key, value, _), raw in zip(pending, answers, strict=True):
            row = (key, value, trim_caption(raw, loaded.spec.trim_prefix), len(raw))
            buffer.append(row)
            new_rows[key] = row
        pending.clear()

    def flush_chunk() -> None:
        nonlocal next_chunk
        write_parquet(_table(buffer), folder / f"chunk-{next_chunk:05d}.parquet", footer)
        buffer.clear()
        if on_chunk is not None:
            on_chunk(len(earlier) + len(new_rows), next_chunk)
        next_chunk += 1

    for tar in (Path(t) for t in tars):
        for sample in TarImages([tar], _rgb):
            if sample.image is None:
                skipped.append(sample.error or "unknown")
                continue
            if sample.key in seen:
                raise BadInputError(f"{tar}: sample key {sample.key} repeats one of {seen[sample.key]}")
            seen[sample.key] = tar
            value = _sample_hash(sample.meta, tar, sample.key)
            order.append(sample.key)
            if sample.key in earlier:
                if earlier[sample.key][1] != value:
                    raise BadInputError(
                        f"{tar}: sample {sample.key} has hash {value} but its caption chunk in {folder} says "
                        f"{earlier[sample.key][1]}; the tars changed since: delete {folder} to caption anew"
                    )
                continue
            pending.append((sample.key, value, sample.image))
            if len(pending) >= batch_size:
                flush_batch()
                if len(buffer) >= chunk_rows:
                    flush_chunk()
    if pending:
        flush_batch()
    rows = [earlier[key] if key in earlier else new_rows[key] for key in order]
    write_parquet(_table(rows), out, footer)
    shutil.rmtree(folder, ignore_errors=True)
    reasons = Counter(reason.split(":")[0] for reason in skipped)
    return CaptionedShard(
        rows=len(rows),
        resumed=sum(1 for key in order if key in earlier),
        captioned_now=len(new_rows),
        skipped=len(skipped),
        skipped_reasons=dict(reasons.most_common()),
        seconds=time.perf_counter() - started,
        batch_size=batcher.batch_size,
        halvings=batcher.halvings,
        model=loaded.spec.model,
        device=str(loaded.device),
        dtype=str(loaded.dtype).removeprefix("torch."),
    )
