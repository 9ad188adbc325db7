"""A byte-level BPE tokenizer trained on the spot for the embedded default (the synthetic world).

The tokenizer is trained with the ``tokenizers`` library and wrapped as a ``transformers`` fast
tokenizer, then saved with ``save_pretrained``, so every later stage loads it with
``AutoTokenizer.from_pretrained(path)`` exactly like a hub tokenizer.

Ids are fixed on purpose (``OlmoConfig`` defaults name the real vocabulary's ids, so a tiny
model must be told these explicitly): ``<|endoftext|>`` is id 0 and serves as eos, bos, unk
and the few-shot separator; ``<|padding|>`` is id 1. The chat markers ``<|user|>`` and
``<|assistant|>`` are ordinary (non-special) added tokens, so they survive
``decode(skip_special_tokens=True)`` and are learnt like any other word.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

if TYPE_CHECKING:  # transformers costs seconds to import; the world build only needs the names
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|padding|>"
CHAT_MARKERS = ("<|user|>", "<|assistant|>")


VOCAB_SIZE = 2048
"""Target vocabulary of the world's tokenizer (``models.<m>.tokenizer.vocab_size``)."""


def train_tokenizer(
    texts: Iterable[str],
    extra_lines: Sequence[str],
    vocab_size: int,
    out_dir: Path,
    *,
    required_single: Iterable[str] = (),
    model_max_length: int = 1024,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` plus ``extra_lines`` and save it to ``out_dir``.

    ``extra_lines`` are the world's tokenizer-only lines (prompt markers and label words
    repeated), which make those words single tokens without ever putting them in the
    pre-training corpus. ``vocab_size`` is a ceiling: a small corpus runs out of merges
    earlier. Raises ``ValueError`` if any word of ``required_single`` is not one token.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],  # in this order: ids 0 and 1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(itertools.chain(texts, extra_lines), trainer=trainer)
    # The byte-level pre-tokenizer splits "<|user|>" at the punctuation, so training lines
    # alone cannot make it one token: register the markers as normal added tokens.
    tok.add_tokens([AddedToken(m, special=False, normalized=False) for m in CHAT_MARKERS])

    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 (slow import, see top)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        model_max_length=model_max_length,
        padding_side="right",
    )
    if fast.eos_token_id != 0 or fast.pad_token_id != 1:
        raise RuntimeError(f"special token ids moved: eos={fast.eos_token_id}, "
                           f"pad={fast.pad_token_id} (expected 0 and 1)")
    require_single_tokens(fast, required_single)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def check_single_tokens(tokenizer: PreTrainedTokenizerFast, words: Iterable[str]) -> list[str]:
    """The words that are NOT a single token where they occur after another word.

    A word is encoded with a leading space (" Kelmar"), as it appears mid-sentence; added
    tokens such as the chat markers match anywhere, so they are encoded bare.
    """
    added = set(tokenizer.get_added_vocab())
    bad = []
    for word in words:
        text = word if word in added else " " + word
        if len(tokenizer.encode(text, add_special_tokens=False)) != 1:
            bad.append(word)
    return bad


def require_single_tokens(tokenizer: PreTrainedTokenizerFast, words: Iterable[str]) -> None:
    """Raise a ValueError listing every word of ``words`` that is not a single token."""
    words = list(dict.fromkeys(words))
    bad = check_single_tokens(tokenizer, words)
    if bad:
        shown = ", ".join(repr(w) for w in bad[:20])
        raise ValueError(
            f"{len(bad)} of {len(words)} words that must be single tokens are split by the "
            f"trained tokenizer: {shown}{' ...' if len(bad) > 20 else ''}. Raise the "
            "tokenizer's vocab_size, or repeat these words in the world's tokenizer lines."
        )
