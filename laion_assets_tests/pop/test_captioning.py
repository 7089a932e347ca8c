"""LAION-POP's captioning: trimming, the tiny LLaVA end to end over real tars, resuming, OOM halving, bad inputs."""

import json
import os
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from laion_assets.core.errors import BadInputError
from laion_assets.core.paths import PROJECT_DIR
from laion_assets.defs.pop.vlm import VlmResource
from laion_assets.demos.tiny_llava import SCRIPTED_ANSWER, write_tiny_llava
from laion_assets.pop.captioning import (
    CAPTION_SCHEMA,
    CAPTIONER_KEY,
    DEFAULT_VLM,
    LAION_POP_PROMPT,
    TRIM_PREFIX,
    BatchCaptioner,
    LoadedVlm,
    VlmSpec,
    caption_tars,
    chunks_dir,
    load_vlm,
    prompt_text,
    trim_caption,
)
from laion_assets_tests.img2dataset_tars import NOT_AN_IMAGE, image_bytes, write_tar

SHORT_PROMPT = "Describe this image."  # the random model's answers depend on the image more with a short prompt


def pop_sample(row: int, image: bytes | None, meta: dict | None = None) -> tuple[str, dict[str, bytes]]:
    """One sample as img2dataset writes a pop shard's: KEY.jpg, KEY.txt, KEY.json carrying the int64 hash."""
    key = f"{row:09d}"
    meta = meta if meta is not None else {"key": key, "status": "success", "hash": -(2**62) + 7919 * row}
    files = {"txt": f"caption {row}".encode(), "json": json.dumps(meta).encode()}
    if image is not None:
        files["jpg"] = image
    return key, files


def hash_of(row: int) -> int:
    return -(2**62) + 7919 * row


@pytest.fixture(scope="module")
def tars(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tars: 7 decodable images (two sizes), one undecodable image and one sample without an image."""
    folder = tmp_path_factory.mktemp("pop_tars")
    first = [pop_sample(r, image_bytes(r, size=(40 + r, 30))) for r in range(4)]
    first.insert(2, pop_sample(90, NOT_AN_IMAGE))
    second = [pop_sample(r, image_bytes(r, size=(32, 48))) for r in range(4, 7)] + [pop_sample(91, None)]
    return [write_tar(folder / "00000.tar", first), write_tar(folder / "00001.tar", second)]


KEYS = [f"{r:09d}" for r in range(7)]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> LoadedVlm:
    folder = write_tiny_llava(tmp_path_factory.mktemp("llava") / "scripted", scripted=True)
    return load_vlm(VlmSpec(model=str(folder), device="cpu", max_new_tokens=12))


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llava(tmp_path_factory.mktemp("llava") / "random", seed=0)


@pytest.fixture(scope="module")
def randomly(random_folder: Path) -> LoadedVlm:
    return load_vlm(VlmSpec(model=str(random_folder), device="cpu", max_new_tokens=8, prompt=SHORT_PROMPT))


@pytest.fixture(scope="module")
def reference(randomly: LoadedVlm, tars: list[Path], tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """An uninterrupted run of the random model, one image per generate call."""
    out = tmp_path_factory.mktemp("reference") / "00000.parquet"
    caption_tars(tars, randomly, out, batch_size=1, chunk_rows=2)
    return pq.read_table(out)


class Faulty(LoadedVlm):
    """The loaded model with fault injection: count generate calls and images, interrupt or run out of memory."""

    calls = 0
    images = 0
    interrupt_on_call: int | None = None
    oom_above: int | None = None

    def generate(self, images: list) -> list[str]:
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        if self.oom_above is not None and len(images) > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.images += len(images)
        return super().generate(images)


def faulty(loaded: LoadedVlm, **faults: int) -> Faulty:
    wrapped = Faulty(**{f.name: getattr(loaded, f.name) for f in fields(loaded)})
    for name, value in faults.items():
        setattr(wrapped, name, value)
    return wrapped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("This image showcases a red car on a street.", "a red car on a street."),
        ("  this IMAGE showcases: A red car", "A red car"),
        ("\u2018This image showcases\u2019: a cat", "a cat"),
        ("\u2018This image showcases\u2019 a cat", "a cat"),
        ('"This image showcases" - a cat', "a cat"),
        ("This image showcases, in a photograph, a cat", "in a photograph, a cat"),
        ("This image showcases", ""),
        ('This image showcases "HELLO" written in chalk', '"HELLO" written in chalk'),
        ("A cat. This image showcases a cat", "A cat. This image showcases a cat"),
        ("This image showcasesX a cat", "This image showcasesX a cat"),
        ("The image shows a cat", "The image shows a cat"),
        ("\n\nA cat\n", "A cat"),
    ],
)
def test_trim_caption(text: str, expected: str) -> None:
    assert trim_caption(text) == expected


def test_trim_caption_with_another_or_no_prefix() -> None:
    assert trim_caption("This image showcases a cat", "") == "This image showcases a cat"
    assert trim_caption("Caption: a cat", "Caption") == "a cat"


def test_the_prompt_is_laions() -> None:
    assert LAION_POP_PROMPT.startswith("Can you please describe this image in up to two paragraphs?")
    assert LAION_POP_PROMPT.endswith("Start with the words \u2018This image showcases\u2019:")
    assert '"the image is inspiring to viewers"' in LAION_POP_PROMPT
    assert TRIM_PREFIX == "This image showcases" and DEFAULT_VLM == "llava-hf/llava-1.5-7b-hf"
    assert VlmSpec().model == DEFAULT_VLM and VlmSpec().prompt == LAION_POP_PROMPT


def test_the_prompt_takes_llava_15s_conversation_format(scripted: LoadedVlm) -> None:
    # The tiny model's processor carries llava-hf's chat template; without one, the model card's format is used.
    assert scripted.prompt_text == f"USER: <image>\n{LAION_POP_PROMPT} ASSISTANT:"
    assert prompt_text(object(), "Hi?") == "USER: <image>\nHi? ASSISTANT:"
    assert scripted.processor.tokenizer.padding_side == "left"


def test_scripted_llava_captions_every_decodable_image_trimmed(
    scripted: LoadedVlm, tars: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "captions" / "00000.parquet"
    done = caption_tars(tars, scripted, out, batch_size=3, chunk_rows=2)
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == CAPTION_SCHEMA
    assert table.column("key").to_pylist() == KEYS  # tar order, the undecodable and image-less samples left out
    assert table.column("hash").to_pylist() == [hash_of(r) for r in range(7)]
    assert table.column("llava_caption").to_pylist() == ["a small test picture"] * 7
    assert table.column("caption_raw_chars").to_pylist() == [len(SCRIPTED_ANSWER)] * 7
    record = json.loads(table.schema.metadata[CAPTIONER_KEY.encode()])
    assert record["model"] == scripted.spec.model and record["trim_prefix"] == TRIM_PREFIX
    assert (done.rows, done.resumed, done.captioned_now, done.skipped) == (7, 0, 7, 2)
    assert set(done.skipped_reasons) == {"UnidentifiedImageError", "no image in the sample"}
    assert (done.batch_size, done.halvings, done.device, done.dtype) == (3, 0, "cpu", "float32")
    assert not chunks_dir(out).exists() and sorted(p.name for p in out.parent.iterdir()) == ["00000.parquet"]


def test_captions_do_not_depend_on_the_batch_size(
    randomly: LoadedVlm, reference: pa.Table, tars: list[Path], tmp_path: Path
) -> None:
    # Every row of a batch has the same prompt and image-token count, so left padding never comes into play.
    captions = reference.column("llava_caption").to_pylist()
    assert len(set(captions)) > 1, "the random model should answer different images differently"
    done = caption_tars(tars, randomly, tmp_path / "b3.parquet", batch_size=3, chunk_rows=100)
    assert pq.read_table(tmp_path / "b3.parquet").equals(reference)
    assert done.rows == 7


def test_an_interrupted_run_resumes_from_its_finished_chunks(
    randomly: LoadedVlm, reference: pa.Table, tars: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "00000.parquet"
    first = faulty(randomly, interrupt_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        caption_tars(tars, first, out, batch_size=2, chunk_rows=3)
    # Two batches of 2 captioned: one chunk of 4 rows written (chunks close at >= chunk_rows), nothing else.
    assert not out.exists()
    assert sorted(p.name for p in chunks_dir(out).iterdir()) == ["chunk-00000.parquet"]
    assert pq.read_table(chunks_dir(out) / "chunk-00000.parquet").column("key").to_pylist() == KEYS[:4]

    second = faulty(randomly)
    done = caption_tars(tars, second, out, batch_size=2, chunk_rows=3)
    assert second.images == 3  # only the images no chunk held
    assert (done.rows, done.resumed, done.captioned_now) == (7, 4, 3)
    assert pq.read_table(out).equals(reference)
    assert not chunks_dir(out).exists()


def test_chunks_made_with_other_settings_are_not_resumed(
    randomly: LoadedVlm, reference: pa.Table, tars: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "00000.parquet"
    with pytest.raises(KeyboardInterrupt):
        caption_tars(tars, faulty(randomly, interrupt_on_call=2), out, batch_size=2, chunk_rows=2)
    assert (chunks_dir(out) / "chunk-00000.parquet").is_file()
    other = faulty(randomly)
    other.spec = VlmSpec(randomly.spec.model, "cpu", max_new_tokens=8, prompt=SHORT_PROMPT, trim_prefix="")
    done = caption_tars(tars, other, out, batch_size=4, chunk_rows=2)
    assert (done.resumed, done.captioned_now, other.images) == (0, 7, 7)


def test_cuda_out_of_memory_halves_the_batch(scripted: LoadedVlm, tars: list[Path], tmp_path: Path) -> None:
    tight = faulty(scripted, oom_above=1)
    done = caption_tars(tars, tight, tmp_path / "oom.parquet", batch_size=4, chunk_rows=100)
    assert (done.batch_size, done.halvings, done.rows) == (1, 2, 7)
    assert tight.images == 7
    assert pq.read_table(tmp_path / "oom.parquet").column("llava_caption").to_pylist() == ["a small test picture"] * 7


def test_the_batcher_raises_other_errors_and_an_oom_at_batch_size_one() -> None:
    def broken(images: list) -> list[str]:
        raise RuntimeError("shape mismatch")

    def tight(images: list) -> list[str]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        BatchCaptioner(broken, 4)([1, 2, 3])
    batcher = BatchCaptioner(tight, 2)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        batcher([1, 2, 3])
    assert (batcher.batch_size, batcher.halvings) == (1, 1)
    with pytest.raises(BadInputError, match="batch_size"):
        BatchCaptioner(tight, 0)


def test_a_missing_or_broken_model_folder_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-llava"
    with pytest.raises(BadInputError, match="no-such-llava") as err:
        load_vlm(VlmSpec(model=str(missing), device="cpu"))
    assert "huggingface-cli download llava-hf/llava-1.5-7b-hf" in str(err.value)
    empty = tmp_path / "empty-llava"
    empty.mkdir()
    with pytest.raises(BadInputError, match="empty-llava"):
        load_vlm(VlmSpec(model=str(empty), device="cpu"))


def test_a_sample_without_its_hash_names_the_tar_and_key(scripted: LoadedVlm, tmp_path: Path) -> None:
    tar = write_tar(
        tmp_path / "00007.tar",
        [pop_sample(0, image_bytes(0)), pop_sample(1, image_bytes(1), {"key": "000000001", "status": "success"})],
    )
    with pytest.raises(BadInputError, match=r"00007\.tar: sample 000000001's json has no 'hash'"):
        caption_tars([tar], scripted, tmp_path / "x.parquet", batch_size=2)
    assert not (tmp_path / "x.parquet").exists()


def test_the_resource_loads_a_relative_folder_once_per_process(random_folder: Path) -> None:
    relative = os.path.relpath(random_folder, PROJECT_DIR)
    resource = VlmResource(model=relative, device="cpu", max_new_tokens=4)
    spec = resource.spec()
    assert spec.model == str(random_folder) and spec.max_new_tokens == 4 and spec.prompt == LAION_POP_PROMPT
    assert resource.load() is VlmResource(model=str(random_folder), device="cpu", max_new_tokens=4).load()
    assert VlmResource().spec().model == DEFAULT_VLM and VlmResource().batch_size == 8
