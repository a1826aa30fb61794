"""Masked-LM (token / whole-word / whole-entity) and dEA corruptions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ernie_kg.data import IGNORE_INDEX, MaskingVocab, dea_noise, mask_tokens, masking_units

PAD, CLS, SEP, MASK = 0, 101, 102, 103
VOCAB = MaskingVocab(mask_token_id=MASK, vocab_size=1000, special_ids=(PAD, CLS, SEP, MASK))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine a second thread
    turns every op into a wait for the scheduler."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def corpus(rows: int = 200, length: int = 512, seed: int = 0) -> torch.Tensor:
    """``rows * (length - 2)`` maskable tokens framed by [CLS] ... [SEP]: 100k+ tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(200, 1000, (rows, length), generator=generator)
    ids[:, 0], ids[:, -1] = CLS, SEP
    return ids


def words_of(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Word ids with words of 1-4 wordpieces; -1 on [CLS] and [SEP]."""
    generator = torch.Generator().manual_seed(seed)
    word_ids = torch.full((rows, length), -1)
    for row in range(rows):
        position, word = 1, 0
        while position < length - 1:
            size = int(torch.randint(1, 5, (1,), generator=generator))
            word_ids[row, position:min(position + size, length - 1)] = word
            position, word = position + size, word + 1
    return word_ids


def test_token_masking_statistics_on_100k_tokens():
    ids = corpus()
    corrupted, labels = mask_tokens(ids, VOCAB, generator=torch.Generator().manual_seed(1))
    selected = labels != IGNORE_INDEX
    maskable = ids.numel() - 2 * ids.shape[0]
    assert maskable >= 100_000
    assert abs(selected.sum().item() / maskable - 0.15) < 0.005
    assert torch.equal(labels[selected], ids[selected])
    masked = (corrupted[selected] == MASK).float().mean().item()
    unchanged = (corrupted[selected] == ids[selected]).float().mean().item()
    replaced = 1 - masked - unchanged
    # a random replacement may draw the original token: 1/796 of the 10%, negligible
    assert abs(masked - 0.8) < 0.015
    assert abs(unchanged - 0.1) < 0.01
    assert abs(replaced - 0.1) < 0.01
    assert torch.equal(corrupted[~selected], ids[~selected])
    assert not torch.isin(corrupted[selected & (corrupted != MASK)],
                          torch.tensor(VOCAB.special_ids)).any()


def test_special_tokens_and_padding_are_never_masked():
    ids = corpus(rows=50, length=64)
    ids[:, 40:] = PAD
    _, labels = mask_tokens(ids, VOCAB, mlm_probability=0.9,
                            generator=torch.Generator().manual_seed(0))
    assert (labels[:, 40:] == IGNORE_INDEX).all() and (labels[:, 0] == IGNORE_INDEX).all()


def _assert_units_whole(labels: torch.Tensor, groups: torch.Tensor) -> None:
    """Tokens sharing a group id (>= 0) in a row are all selected or all not."""
    for row in range(labels.shape[0]):
        for group in torch.unique(groups[row][groups[row] >= 0]):
            chosen = labels[row][groups[row] == group] != IGNORE_INDEX
            assert chosen.all() or not chosen.any()


def test_whole_word_masking_never_splits_a_word_and_keeps_the_rate():
    ids = corpus(rows=200, length=512)
    word_ids = words_of(200, 512)
    _, labels = mask_tokens(ids, VOCAB, word_ids=word_ids,
                            generator=torch.Generator().manual_seed(2))
    _assert_units_whole(labels[:20], word_ids[:20])
    rate = (labels != IGNORE_INDEX).sum().item() / (ids.numel() - 2 * ids.shape[0])
    assert abs(rate - 0.15) < 0.01  # words chosen with p, so tokens too (in expectation)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=12), seed=st.integers(0, 10**6))
def test_whole_word_masking_property(sizes, seed):
    word_ids = [None] + [w for w, size in enumerate(sizes) for _ in range(size)] + [None]
    ids = torch.randint(200, 1000, (1, len(word_ids)))
    ids[0, 0], ids[0, -1] = CLS, SEP
    _, labels = mask_tokens(ids, VOCAB, mlm_probability=0.5, word_ids=[word_ids],
                            generator=torch.Generator().manual_seed(seed))
    groups = torch.tensor([[-1 if w is None else w for w in word_ids]])
    _assert_units_whole(labels, groups)


def test_whole_entity_masking_masks_mentions_as_one_unit():
    ids = corpus(rows=300, length=32)
    word_ids = words_of(300, 32, seed=4)
    spans = [[(3, 7), (10, 12)]] * 300  # (3, 7) may cut words: they join the mention
    units = masking_units(ids, ~torch.isin(ids, torch.tensor(VOCAB.special_ids)), word_ids,
                          spans)
    _, labels = mask_tokens(ids, VOCAB, word_ids=word_ids, entity_spans=spans,
                            generator=torch.Generator().manual_seed(5))
    assert (units[:, 3:7] == units[:, 3:4]).all() and (units[:, 10:12] == units[:, 10:11]).all()
    _assert_units_whole(labels, units)
    mention = labels[:, 3:7] != IGNORE_INDEX
    assert mention.all(dim=1).any() and (~mention).all(dim=1).any()
    with pytest.raises(ValueError, match="entity_spans"):
        mask_tokens(ids[:1], VOCAB, entity_spans=[[(5, 3)]])


def test_masking_is_reproducible_and_accepts_a_tokenizer():
    from transformers import AutoTokenizer

    from ernie_kg.paths import default_backbone

    tokenizer = AutoTokenizer.from_pretrained(default_backbone())
    encoded = tokenizer(["knowledge enhanced language representation"] * 4,
                        return_tensors="pt")
    first = mask_tokens(encoded["input_ids"], tokenizer, mlm_probability=0.5,
                        word_ids=[encoded.word_ids(i) for i in range(4)],
                        generator=torch.Generator().manual_seed(7))
    second = mask_tokens(encoded["input_ids"], tokenizer, mlm_probability=0.5,
                         word_ids=[encoded.word_ids(i) for i in range(4)],
                         generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    single, single_labels = mask_tokens(encoded["input_ids"][0], tokenizer)
    assert single.shape == single_labels.shape == encoded["input_ids"][0].shape


def test_dea_noise_statistics_and_valid_targets():
    generator = torch.Generator().manual_seed(0)
    num_entities = 500
    aligned = torch.rand(420, 500, generator=generator) < 0.5
    entity_ids = torch.where(aligned, torch.randint(1, num_entities + 1, aligned.shape,
                                                    generator=generator), 0)
    noisy, labels = dea_noise(entity_ids, generator=torch.Generator().manual_seed(1))
    total = aligned.sum().item()
    assert total >= 100_000
    assert torch.equal(labels[aligned], entity_ids[aligned])
    assert (labels[~aligned] == IGNORE_INDEX).all() and (noisy[~aligned] == 0).all()
    valid = labels[labels != IGNORE_INDEX]
    assert valid.min() >= 1 and valid.max() <= num_entities  # dEA targets are table rows
    dropped = (noisy[aligned] == 0).float().mean().item()
    changed = ((noisy[aligned] != entity_ids[aligned]) & (noisy[aligned] != 0)).float().mean()
    assert abs(dropped - 0.15) < 0.005
    assert abs(changed.item() - 0.05 * (1 - 1 / num_entities)) < 0.003
    batch_entities = torch.unique(entity_ids[aligned])
    assert torch.isin(noisy[noisy > 0], batch_entities).all()  # replacements come from the batch


def test_dea_noise_with_explicit_candidates_and_no_entities():
    entity_ids = torch.tensor([[0, 4, 0, 4]])
    noisy, labels = dea_noise(entity_ids, replace_probability=1.0, mask_probability=0.0,
                              candidates=torch.tensor([9]))
    assert noisy.tolist() == [[0, 9, 0, 9]] and labels.tolist() == [[-100, 4, -100, 4]]
    empty = torch.zeros(2, 3, dtype=torch.long)
    noisy, labels = dea_noise(empty)
    assert (noisy == 0).all() and (labels == IGNORE_INDEX).all()
