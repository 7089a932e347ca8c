"""A tiny LLaVA 1.5, built offline and saved in llava-hf's layout, so captioning runs in tests and demos.

``write_tiny_llava(folder)`` saves a ``LlavaForConditionalGeneration`` (a 2-layer CLIP vision tower on 16 x 16
images, a 1-layer Llama), a word-level tokenizer over the words of LAION-POP's prompt, a ``CLIPImageProcessor`` and a
``LlavaProcessor`` with llava-hf's chat template: ``load_vlm(VlmSpec(model=str(folder)))`` loads it exactly as it
loads ``llava-hf/llava-1.5-7b-hf``, without a network. Its weights are random (seeded), so its answers are word salad,
unless ``scripted``: then the language model is wired by hand to answer every image with
:data:`SCRIPTED_ANSWER` and stop, which shows the prefix trimming end to end.

Run ``python -m laion_assets.demos.tiny_llava FOLDER [--scripted]`` to write one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from laion_assets.core.atomic import atomic_dir
from laion_assets.pop.captioning import LAION_POP_PROMPT, LLAVA_FORMAT

SCRIPTED_ANSWER = "This image showcases a small test picture"
IMAGE_SIZE = 16
PATCH_SIZE = 8
MAX_NEW_TOKENS = 12
SPECIAL = ("<unk>", "<s>", "</s>", "<pad>", "<image>")
# llava-hf/llava-1.5-7b-hf's chat template: "USER: <image>\n{prompt} ASSISTANT:".
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _tokenizer() -> Any:
    """A word-level tokenizer (whitespace and punctuation split) over the prompt's words and the scripted answer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    text = LLAVA_FORMAT.format(prompt=LAION_POP_PROMPT) + " " + SCRIPTED_ANSWER
    words = sorted({word for word, _ in pre.pre_tokenize_str(text)} - set(SPECIAL))
    vocab = {token: i for i, token in enumerate([*SPECIAL, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


def _script(model: Any, tokenizer: Any, prompt_end: str) -> None:
    """Wire the language model so that after ``prompt_end`` it says :data:`SCRIPTED_ANSWER`, then the EOS token.

    The embeddings are one-hot and every layer's output projections are zero, so the last hidden state is the
    current token's one-hot vector (scaled by the final RMSNorm); ``lm_head`` maps each token to its successor.
    """
    import torch

    chain = [prompt_end, *SCRIPTED_ANSWER.split(), tokenizer.eos_token]
    ids = tokenizer.convert_tokens_to_ids(chain)
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        embed.zero_()
        embed[:, : embed.shape[0]] = torch.eye(embed.shape[0])
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = model.get_output_embeddings().weight
        head.zero_()
        for current, successor in zip(ids, ids[1:], strict=False):
            head[successor, current] = 1.0


def write_tiny_llava(folder: Path, scripted: bool = False, seed: int = 0) -> Path:
    """Save a tiny random (or ``scripted``) LLaVA 1.5 with its processor into ``folder``; return ``folder``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tokenizer = _tokenizer()
    vocab = len(tokenizer)
    hidden = -(-vocab // 32) * 32  # one-hot embeddings need hidden >= vocab (scripted); a multiple of the heads
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL}
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=16,
    )
    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        image_seq_length=patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    if scripted:
        _script(model, tokenizer, ":")  # the last token of "... ASSISTANT:"
    model.generation_config = GenerationConfig(
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return folder


def main(argv: list[str] | None = None) -> None:
    """Write a tiny LLaVA to the folder given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--scripted", action="store_true", help=f"answer every image with {SCRIPTED_ANSWER!r}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_llava(args.folder, args.scripted, args.seed))


if __name__ == "__main__":
    main()
