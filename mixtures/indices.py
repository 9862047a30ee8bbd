"""The index arrays of a training plan, with Megatron-core's GPTDataset and BlendedDataset semantics.

For one source in one phase (Megatron's ``GPTDataset``):

* ``document_index`` (int32): the source's documents (numbers into its document table) repeated once
  per epoch, shuffled. When more than one epoch is needed and the last one contributes fewer than 80%
  of an epoch's samples, the last epoch is shuffled on its own, so that the partial epoch does not
  favour some documents over the whole run.
* ``sample_index`` ((samples + 1) x 2, int32 or int64): where each sample starts, as (position in
  ``document_index``, token offset in that document). Sample j covers the ``seq_len + 1`` tokens from
  row j to row j + 1 inclusive: consecutive samples share one token, the last one's label.
* ``shuffle_index`` (uint32 or int64): a permutation of the samples; the k-th sample the source gives
  is row ``shuffle_index[k]``.

Across sources in one phase (Megatron's ``BlendedDataset``), the greedy rule: sample i goes to the
source with the largest ``weight * max(i, 1) - samples it already has`` (ties to the first source),
which keeps every prefix of n samples within 2 of ``weight * n`` for every source.

The random number streams are numpy's ``RandomState`` used in the same order as Megatron, so with the
same seed these arrays are the ones Megatron-core builds (the tests compare them with its C++ helpers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: the final epoch gets its own shuffle when it contributes fewer than this share of an epoch's samples
SEPARATE_FINAL_EPOCH_THRESHOLD = 0.80


@numba.njit(cache=True, nogil=True)
def _greedy_blend(weights: np.ndarray, size: int, dataset_index: np.ndarray,
                  dataset_sample_index: np.ndarray) -> None:
    counts = np.zeros(weights.shape[0], np.int64)
    for i in range(size):
        x = max(float(i), 1.0)
        best = 0
        best_error = weights[0] * x - counts[0]
        for d in range(1, weights.shape[0]):
            error = weights[d] * x - counts[d]
            if error > best_error:
                best_error = error
                best = d
        dataset_index[i] = best
        dataset_sample_index[i] = counts[best]
        counts[best] += 1


def blend(weights: list[float] | np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset_index int16, dataset_sample_index int64) of ``size`` samples blended by ``weights``.

    ``weights`` must already sum to 1 (the mixture spec checks it)."""
    w = np.asarray(weights, np.float64)
    if not 0 < len(w) <= np.iinfo(np.int16).max:
        raise ValueError(f"{len(w)} sources: a blend takes 1 to 32767")
    dataset_index = np.zeros(size, np.int16)
    dataset_sample_index = np.zeros(size, np.int64)
    _greedy_blend(w, size, dataset_index, dataset_sample_index)
    return dataset_index, dataset_sample_index


def num_epochs(tokens_per_epoch: int, samples: int, seq_len: int) -> int:
    """Whole passes over the documents needed for ``samples`` samples (Megatron's ``_get_num_epochs``)."""
    needed = samples * seq_len + 1
    return max(1, -(-needed // tokens_per_epoch))


def document_index(documents: np.ndarray, epochs: int, rng: np.random.RandomState,
                   separate_final_epoch: bool) -> np.ndarray:
    """``documents`` repeated ``epochs`` times and shuffled (the final epoch apart when asked)."""
    if not separate_final_epoch or epochs == 1:
        index = np.tile(np.asarray(documents, np.int32), epochs)
        rng.shuffle(index)
        return index
    first = document_index(documents, epochs - 1, rng, False)
    last = document_index(documents, 1, rng, False)
    return np.concatenate((first, last))


def sample_index(sizes: np.ndarray, doc_index: np.ndarray, seq_len: int, epochs: int,
                 tokens_per_epoch: int) -> np.ndarray:
    """Start (document_index position, offset) of every sample and the end of the last one.

    The documents are laid end to end in ``doc_index`` order; sample j starts at token ``j * seq_len``
    of that stream, so a start is found by binary search in the running total of document lengths.
    Every document has at least one token (its end-of-document token), so the position is unique."""
    samples = (epochs * tokens_per_epoch - 1) // seq_len
    lengths = np.asarray(sizes, np.int64)[doc_index]
    ends = np.cumsum(lengths)
    starts = np.arange(samples + 1, dtype=np.int64) * seq_len
    position = np.searchsorted(ends, starts, side="right")
    offset = starts - (ends[position] - lengths[position])
    dtype = np.int32 if max(len(doc_index), int(np.max(sizes))) <= np.iinfo(np.int32).max else np.int64
    out = np.empty((samples + 1, 2), dtype)
    out[:, 0] = position
    out[:, 1] = offset
    return out


def shuffle_index(first: int, total: int, rng: np.random.RandomState) -> np.ndarray:
    """A permutation of ``range(total)`` shuffled in two ranges: ``[0, first)`` and ``[first, total)``."""
    dtype = np.int64 if total >= np.iinfo(np.uint32).max - 1 else np.uint32
    head = np.arange(first, dtype=dtype)
    rng.shuffle(head)
    if first == total:
        return head
    tail = np.arange(first, total, dtype=dtype)
    rng.shuffle(tail)
    return np.concatenate((head, tail))


@dataclass
class SourceIndices:
    """One source's arrays in one phase and the figures that decided them."""

    document_index: np.ndarray
    sample_index: np.ndarray
    shuffle_index: np.ndarray
    num_epochs: int
    separate_final_epoch: bool
    tokens_per_epoch: int


def build_source_indices(sizes: np.ndarray, documents: np.ndarray, samples: int, seq_len: int,
                         seed: int) -> SourceIndices:
    """GPTDataset's three arrays for ``samples`` samples of ``seq_len + 1`` tokens drawn from
    ``documents`` (numbers into ``sizes``, the tokens of every document of the source)."""
    tokens_per_epoch = int(np.asarray(sizes, np.int64)[documents].sum())
    if tokens_per_epoch < 2:
        raise ValueError("fewer than 2 tokens to draw samples from")
    epochs = num_epochs(tokens_per_epoch, samples, seq_len)
    separate = False
    sans_final = 0
    if epochs > 1:
        sans_final = ((epochs - 1) * tokens_per_epoch - 1) // seq_len
        per_epoch = (tokens_per_epoch - 1) // seq_len
        separate = samples - sans_final < int(SEPARATE_FINAL_EPOCH_THRESHOLD * per_epoch)
    rng = np.random.RandomState(seed)
    doc_index = document_index(documents, epochs, rng, separate)
    samp_index = sample_index(sizes, doc_index, seq_len, epochs, tokens_per_epoch)
    total = samp_index.shape[0] - 1
    shuf_index = shuffle_index(sans_final if separate else total, total, rng)
    return SourceIndices(doc_index, samp_index, shuf_index, epochs, separate, tokens_per_epoch)
