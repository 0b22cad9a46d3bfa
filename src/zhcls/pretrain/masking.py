"""BERT's masking: choose ``mask_prob`` of a sequence's tokens by whole words (a word is a token that
starts one plus the tokens that continue it), then replace 80 % of the chosen tokens with [MASK],
10 % with a random token, and keep 10 %. Without a segmenter every token is a word, which is plain
token masking. Numpy only; the caller's generator makes it reproducible."""
from __future__ import annotations

import numpy as np

IGNORE = -100  # label of a token that is not predicted (torch's cross_entropy ignore_index)


def choose_words(word_start: np.ndarray, maskable: np.ndarray, mask_prob: float, rng: np.random.Generator) -> np.ndarray:
    """Positions to predict in one sequence: whole words in random order until ``mask_prob`` of the
    maskable tokens is reached, skipping a word that would overshoot (create_pretraining_data.py's rule)."""
    positions = np.flatnonzero(maskable)
    if not len(positions):
        return positions
    budget = max(1, round(len(positions) * mask_prob))
    # A new word begins at a word-start token and after any non-maskable token ([SEP] between lines).
    begins = word_start[positions] | np.r_[True, np.diff(positions) > 1]
    words = np.split(positions, np.flatnonzero(begins)[1:])
    chosen, n = [], 0
    for w in rng.permutation(len(words)):
        if n + len(words[w]) > budget:
            continue
        chosen.append(words[w])
        n += len(words[w])
        if n == budget:
            break
    return np.sort(np.concatenate(chosen)) if chosen else positions[:0]


def mask_batch(input_ids: np.ndarray, word_start: np.ndarray, maskable: np.ndarray, mask_prob: float,
               mask_id: int, vocab_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted input ids, labels): labels hold the original id where a token is predicted, else IGNORE."""
    inputs = input_ids.copy()
    labels = np.full_like(input_ids, IGNORE)
    for row in range(len(input_ids)):
        chosen = choose_words(word_start[row], maskable[row], mask_prob, rng)
        labels[row, chosen] = input_ids[row, chosen]
        action = rng.random(len(chosen))
        inputs[row, chosen[action < 0.8]] = mask_id
        swapped = chosen[(action >= 0.8) & (action < 0.9)]
        inputs[row, swapped] = rng.integers(0, vocab_size, len(swapped))
    return inputs, labels
