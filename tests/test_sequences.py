import torch

from banel.sequences import Sequences, derive_seed


def test_lists_roundtrip_and_padding():
    rows = [[1, 2, 3], [], [4]]
    x = Sequences.from_lists(rows)
    assert x.tokens.shape == (3, 3)
    assert x.lengths.tolist() == [3, 0, 1]
    assert x.to_lists() == rows
    assert x.tokens[2].tolist() == [4, 0, 0]


def test_keys_equal_iff_sequences_equal():
    x = Sequences.from_lists([[1, 2], [1, 2, 0], [1, 2], [12]])
    k = x.keys()
    assert k[0] == k[2]
    assert k[0] != k[1]  # a trailing 0 token is content, not padding
    assert k[3] != Sequences.from_lists([[1, 2]]).keys()[0]
    assert len(set(x.hashes())) == 3


def test_indexing_and_cat():
    x = Sequences.from_lists([[1, 2, 3], [4], [5, 6]])
    assert x[torch.tensor([False, True, True])].to_lists() == [[4], [5, 6]]
    assert x[1].tokens.shape == (1, 1)  # trimmed to the widest selected
    y = Sequences.cat([x[1], Sequences.from_lists([[7, 8, 9, 10]])])
    assert y.to_lists() == [[4], [7, 8, 9, 10]]
    assert len(Sequences.cat([])) == 0


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, 1, "sample") == derive_seed(0, 1, "sample")
    assert len({derive_seed(0, r, s) for r in range(10) for s in ("sample", "negative")}) == 20
    assert 0 <= derive_seed(123, "x") < 2**63
