"""Random masking of caption tokens for the masked-language-model loss (MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS).

The reference's `random_word`, run on the tokenized captions before the language backbone: every position draws
`p = rng.random()`; a non-padding position with `p < 0.15` is selected and, with `q = p / 0.15`, replaced by
[MASK] (`q < 0.8`), by a token drawn uniformly from the vocabulary (`0.8 <= q < 0.9`, one more `rng.choice`) or
kept (`q >= 0.9`). Its label is the original id; every other position gets -100 (ignored by the loss).

The optional greenlight map `(B, >= T)` (the targets' `greenlight_map`, MLM_LOSS_FOR_ONLY_POSITIVES) restricts
this: -1 marks a position that must not be masked (label -100, no masking; the draw is still made), and any
value other than 1 keeps the position out of the loss (label -100; it may still be masked). Special tokens
([CLS], [SEP]) are not protected, as in the reference.
"""
import random
from typing import Optional, Sequence, Tuple

import torch

MASK_PROBABILITY = 0.15
MASK_TOKEN_FRACTION = 0.8      # of the selected positions: [MASK]
RANDOM_TOKEN_FRACTION = 0.1    # of the selected positions: a random vocabulary token (the rest stay as they are)
IGNORE_INDEX = -100


def mask_tokens(input_ids: torch.Tensor, mask_token_id: int, vocab_ids: Sequence[int], pad_token_id: int,
                greenlight_map: Optional[torch.Tensor] = None, rng=random) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(masked input_ids (B, T), labels (B, T))` on `input_ids`' device; `input_ids` itself is not changed.

    `rng` needs `random()` and `choice(seq)` (default: Python's `random` module, as the reference).
    Positions are visited row by row, left to right, so the draws happen in the reference's order.
    """
    ids = input_ids.tolist()
    green = None if greenlight_map is None else greenlight_map.tolist()
    labels = [[IGNORE_INDEX] * len(row) for row in ids]
    for j, row in enumerate(ids):
        for i, token in enumerate(row):
            prob = rng.random()
            light = None if green is None else (green[j][i] if i < len(green[j]) else 0)
            if light == -1:
                continue
            if token != pad_token_id and prob < MASK_PROBABILITY:
                prob /= MASK_PROBABILITY
                if prob < MASK_TOKEN_FRACTION:
                    row[i] = mask_token_id
                elif prob < MASK_TOKEN_FRACTION + RANDOM_TOKEN_FRACTION:
                    row[i] = rng.choice(vocab_ids)
                if light is None or light == 1:
                    labels[j][i] = token
    device = input_ids.device
    return (torch.tensor(ids, dtype=input_ids.dtype, device=device),
            torch.tensor(labels, dtype=torch.long, device=device))


class TokenMasker:
    """The MLM masking of one tokenizer: `masker(input_ids, greenlight_map) -> (masked ids, labels)`.

    Args:
        tokenizer: a HuggingFace tokenizer with a mask token (BERT's [MASK]).
        only_positives: use the greenlight map (MLM_LOSS_FOR_ONLY_POSITIVES); False ignores it.
        rng: source of the draws (None: Python's `random` module, as the reference; kept as None so the model can
            be deep-copied, e.g. for EMA).
    """

    def __init__(self, tokenizer, only_positives: bool = True, rng=None):
        if tokenizer.mask_token_id is None:
            raise ValueError("MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS needs a tokenizer with a mask token")
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.vocab_ids = list(tokenizer.get_vocab().values())
        self.only_positives = only_positives
        self.rng = rng

    def __call__(self, input_ids: torch.Tensor, greenlight_map: Optional[torch.Tensor] = None):
        green = greenlight_map if self.only_positives else None
        rng = random if self.rng is None else self.rng
        return mask_tokens(input_ids, self.mask_token_id, self.vocab_ids, self.pad_token_id, green, rng)
