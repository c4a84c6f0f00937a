"""Report generator: shapes, masks, causality, cache, decoding, grounding on a toy task, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from factories import assert_all_parameters_have_gradients
from medfusion.encoders.base import ENCODERS
from medfusion.encoders.image import ConvEncoder
from medfusion.models.decoding import (
    DecodingOptions,
    beam_search,
    greedy_search,
    length_normalizer,
    repeated_ngram_mask,
)
from medfusion.models.report_config import ReportGeneratorConfig, build_report_generator
from medfusion.models.report_generator import ReportGenerator, grid_position_encoding
from medfusion.types import EncoderOutput

VOCAB, PAD, BOS, EOS = 50, 0, 2, 3
FINDING, LEFT, RIGHT, SIDE = 10, 11, 12, 13


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run much faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_encoder(**overrides) -> ConvEncoder:
    params = {"in_channels": 1, "widths": (8, 16), "out_dim": 32, "norm_groups": 4, **overrides}
    return ENCODERS["image"].build("cnn", **params)


def make_model(seed: int = 0, **overrides) -> ReportGenerator:
    torch.manual_seed(seed)
    params = {"dim": 32, "layers": 2, "heads": 2, "ff_mult": 2, "dropout": 0.1, "max_length": 10, **overrides}
    return ReportGenerator(make_encoder(), VOCAB, **params)


@pytest.fixture(scope="module")
def model() -> ReportGenerator:
    return make_model().eval()


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def random_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    tokens = torch.randint(5, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = BOS
    return tokens


class CornerMaskedEncoder(ConvEncoder):
    """A CNN whose first grid row is masked out, and every token of sample 1 when ``drop_second``."""

    drop_second = False

    def encode(self, x, mask=None):
        output = super().encode(x, mask)
        token_mask = output.token_mask.clone()
        token_mask[:, :8] = False
        if self.drop_second:
            token_mask[1] = False
        return EncoderOutput(output.pooled, output.tokens, token_mask)


# -- forward ------------------------------------------------------------------------------------


def test_shapes_and_attention_rows(model: ReportGenerator) -> None:
    tokens = random_tokens(3, 6)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    tokens[1, 4:] = PAD
    output = model(images(3), tokens, mask, return_attention=True)
    assert output.logits.shape == (3, 6, VOCAB)
    assert output.cross_attention.shape == (3, 2, 2, 6, 64)
    sums = output.cross_attention.sum(dim=-1)
    assert torch.allclose(sums[mask[:, None, None, :].expand_as(sums)], torch.tensor(1.0), atol=1e-5)
    assert (output.cross_attention[1, :, :, 4:] == 0).all()
    assert model(images(3), tokens, mask).cross_attention is None
    assert model.token_grid((32, 32)) == (8, 8)


def test_masked_image_tokens_get_no_attention() -> None:
    torch.manual_seed(0)
    encoder = CornerMaskedEncoder(in_channels=1, widths=(8, 16), out_dim=32, norm_groups=4)
    model = ReportGenerator(encoder, VOCAB, dim=32, layers=2, heads=2, max_length=10).eval()
    attention = model(images(2), random_tokens(2, 5), return_attention=True).cross_attention
    assert (attention[..., :8] == 0).all()
    assert torch.allclose(attention.sum(dim=-1), torch.ones(()), atol=1e-5)
    encoder.drop_second = True
    output = model(images(2), random_tokens(2, 5), return_attention=True)
    assert (output.cross_attention[1] == 0).all()
    assert torch.isfinite(output.logits).all()


def test_causal(model: ReportGenerator) -> None:
    tokens = random_tokens(2, 7)
    changed = tokens.clone()
    changed[:, 4:] = torch.randint(5, VOCAB, (2, 3))
    before = model(images(2), tokens).logits
    after = model(images(2), changed).logits
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_sinusoidal_grid_encoding_distinguishes_cells() -> None:
    encoding = grid_position_encoding((3, 4), 16)
    assert encoding.shape == (12, 16)
    assert torch.cdist(encoding, encoding).add(torch.eye(12)).min() > 0.1
    assert grid_position_encoding((2, 2, 2), 14)[:, 12:].abs().sum() == 0  # 2 frequencies per axis, 2 spare


@pytest.mark.parametrize("tie", [True, False])
def test_every_parameter_gets_a_gradient(tie: bool) -> None:
    model = make_model(tie_embeddings=tie, label_smoothing=0.1).train()
    tokens = random_tokens(3, 8)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[0, 5:] = False
    losses = model.loss(images(3), tokens, mask)
    assert set(losses) == {"cross_entropy", "total", "accuracy"}
    assert not torch.equal(losses["total"], losses["cross_entropy"])  # label smoothing applies to total
    losses["total"].backward()
    assert_all_parameters_have_gradients(model)
    assert (model.output.weight is model.token_embedding.weight) == tie


def test_loss_ignores_padding(model: ReportGenerator) -> None:
    tokens = random_tokens(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 3:] = False
    other = tokens.clone()
    other[0, 3:] = 7
    first, second = model.loss(images(2), tokens, mask), model.loss(images(2), other, mask)
    assert torch.equal(first["cross_entropy"], second["cross_entropy"])
    assert 0.0 <= float(first["accuracy"]) <= 1.0


# -- incremental decoding ------------------------------------------------------------------------


def test_cache_matches_full_forward(model: ReportGenerator) -> None:
    x, tokens = images(2, seed=1), random_tokens(2, 8, seed=1)
    full = model(x, tokens, return_attention=True)
    cache = model.start_cache(model.encode_images(x))
    for t in range(tokens.shape[1]):
        logits, attention = model.decode_step(tokens[:, t], cache)
        assert torch.allclose(logits, full.logits[:, t], atol=1e-5)
        assert torch.allclose(attention, full.cross_attention[:, :, :, t], atol=1e-5)
    assert cache.length == 8


def test_greedy_equals_beam_of_one(model: ReportGenerator) -> None:
    x = images(4, seed=2)
    for settings in ({}, {"no_repeat_ngram": 2, "min_length": 3, "length_penalty": 0.6}):
        greedy = model.generate(x, **settings)
        beam = model.generate(x, method="beam", beam_size=1, **settings)
        for g, b in zip(greedy, beam, strict=True):
            assert g.token_ids == b.token_ids
            assert g.score == pytest.approx(b.score, abs=1e-5)
            assert torch.allclose(g.cross_attention, b.cross_attention, atol=1e-6)


def test_beam_hypotheses_sorted_and_attention_matches_replay(model: ReportGenerator) -> None:
    x = images(3, seed=3)
    max_length = 6
    pools = model.hypotheses(x, method="beam", beam_size=3, max_length=max_length, length_penalty=0.0)
    for index, pool in enumerate(pools):
        assert 1 <= len(pool) <= 3
        scores = [h.score for h in pool]
        assert scores == sorted(scores, reverse=True)
        for report in pool:
            # The score and maps are those of the kept tokens: replay them with teacher forcing.
            ended = len(report.token_ids) < max_length
            sequence = torch.tensor([[BOS, *report.token_ids, *([EOS] if ended else [])]])
            with torch.no_grad():
                replay = model(x[index:index + 1], sequence[:, :-1], return_attention=True)
            log_probs = replay.logits.log_softmax(-1)[0].gather(1, sequence[0, 1:, None]).sum()
            assert report.score == pytest.approx(float(log_probs), abs=1e-4)
            steps = len(report.token_ids)
            expected = replay.cross_attention[0, :, :, :steps].permute(2, 0, 1, 3)
            assert torch.allclose(report.cross_attention, expected, atol=1e-5)
            assert report.mean_attention.shape == (steps, 64)
            assert report.grid == (8, 8)


def test_generate_respects_no_repeat_and_min_length(model: ReportGenerator) -> None:
    for method in ("greedy", "beam"):
        for report in model.generate(images(4, seed=4), method=method, no_repeat_ngram=2, min_length=4):
            ids = report.token_ids
            bigrams = list(zip(ids, ids[1:]))
            assert len(bigrams) == len(set(bigrams))
            assert len(ids) >= 4
            assert PAD not in ids and BOS not in ids


# -- hand-built decoding cases -------------------------------------------------------------------


def bigram_step(table: dict[int, dict[int, float]], vocab: int = 8):
    """A step function whose next-token distribution depends only on the last token."""
    logits = torch.full((vocab, vocab), -30.0)
    for last, probabilities in table.items():
        for token, p in probabilities.items():
            logits[last, token] = math.log(p)

    def step(tokens: torch.Tensor, parents):
        return logits[tokens], torch.zeros(tokens.shape[0], 1)

    return step


def options(**settings) -> DecodingOptions:
    return DecodingOptions(**{"bos_id": BOS, "eos_id": EOS, "max_length": 8, "suppress": (PAD, BOS), **settings})


def test_length_penalty_changes_the_choice() -> None:
    # short: bos -> eos (p = 0.45); long: bos -> 4 -> eos (p = 0.5 * 0.85 = 0.425).
    step = bigram_step({BOS: {4: 0.5, EOS: 0.45, 5: 0.05}, 4: {EOS: 0.85, 5: 0.15}, 5: {EOS: 1.0}})
    raw = beam_search(step, 1, 2, options(length_penalty=0.0), torch.device("cpu"))[0]
    assert raw[0].tokens == [] and raw[0].score == pytest.approx(math.log(0.45), abs=1e-4)
    normalised = beam_search(step, 1, 2, options(length_penalty=1.0), torch.device("cpu"))[0]
    assert normalised[0].tokens == [4]
    assert normalised[0].score == pytest.approx(math.log(0.425) / length_normalizer(2, 1.0), abs=1e-4)
    assert [h.score for h in normalised] == sorted((h.score for h in normalised), reverse=True)


def test_no_repeat_ngram_hand_built() -> None:
    # Always prefers 4 > 5 > 6 > 7 > eos.
    preferences = {4: 0.4, 5: 0.25, 6: 0.15, 7: 0.12, EOS: 0.08}
    step = bigram_step({last: preferences for last in range(8)})
    device = torch.device("cpu")
    assert greedy_search(step, 1, options(), device)[0].tokens == [4] * 8
    assert greedy_search(step, 1, options(no_repeat_ngram=1), device)[0].tokens == [4, 5, 6, 7]
    blocked = [4, 4, 5, 4, 6, 4, 7, 4]
    assert greedy_search(step, 1, options(no_repeat_ngram=2), device)[0].tokens == blocked
    assert beam_search(step, 1, 1, options(no_repeat_ngram=2), device)[0][0].tokens == blocked


def test_repeated_ngram_mask_hand_computed() -> None:
    history = torch.tensor([[4, 5, 4, 6, 4], [1, 2, 3, 1, 2]])
    banned = repeated_ngram_mask(history, 2, 8)
    assert banned[0].nonzero().flatten().tolist() == [5, 6]  # after 4: "4 5" and "4 6" exist
    assert banned[1].nonzero().flatten().tolist() == [3]  # after 2: "2 3" exists
    assert repeated_ngram_mask(history, 3, 8)[1].nonzero().flatten().tolist() == [3]  # after "1 2": "1 2 3"
    assert repeated_ngram_mask(history, 3, 8)[0].nonzero().flatten().tolist() == []  # "6 4" never continued


def test_min_length_delays_eos() -> None:
    step = bigram_step({last: {EOS: 0.7, 4: 0.3} for last in range(8)})
    device = torch.device("cpu")
    assert greedy_search(step, 1, options(), device)[0].tokens == []
    assert greedy_search(step, 1, options(min_length=2), device)[0].tokens == [4, 4]


# -- a toy task: the side of a bright square -----------------------------------------------------


def side_task(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images with an 8x8 bright square on the left or right half; report "finding <side> side"."""
    side = torch.randint(0, 2, (count,), generator=generator)
    x = torch.zeros(count, 1, 32, 32)
    for i in range(count):
        row = int(torch.randint(0, 24, (1,), generator=generator))
        col = int(torch.randint(0, 8, (1,), generator=generator)) + 16 * int(side[i])
        x[i, 0, row:row + 8, col:col + 8] = 1.0
    tokens = torch.stack([torch.tensor([BOS, FINDING, LEFT + int(s), SIDE, EOS]) for s in side])
    return x, tokens, side


@pytest.fixture(scope="module")
def trained() -> ReportGenerator:
    model = make_model(seed=0, layers=1, dropout=0.0, max_length=8).train()
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        x, tokens, _ = side_task(16, generator)
        loss = model.loss(x, tokens)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_overfits_toy_task_and_grounds_the_side_word(trained: ReportGenerator) -> None:
    x, tokens, side = side_task(12, torch.Generator().manual_seed(1))
    assert float(trained.loss(x, tokens)["accuracy"]) == 1.0
    greedy = trained.generate(x)
    beam = trained.generate(x, method="beam", beam_size=3)
    for index in range(12):
        expected = [FINDING, LEFT + int(side[index]), SIDE]
        assert greedy[index].token_ids == expected
        assert beam[index].token_ids == expected
        gh, gw = greedy[index].grid
        side_map = greedy[index].mean_attention[1].view(gh, gw)  # the map that wrote the side word
        left, right = side_map[:, : gw // 2].sum(), side_map[:, gw // 2:].sum()
        correct = left if side[index] == 0 else right
        assert correct > 0.5, f"image {index}: side {int(side[index])}, left {left:.2f}, right {right:.2f}"
        peak_column = int(side_map.flatten().argmax()) % gw
        assert (peak_column < gw // 2) == (side[index] == 0)


# -- config and bad inputs ----------------------------------------------------------------------


def test_build_from_config() -> None:
    config = {"vocab_size": VOCAB, "encoder": {"name": "cnn", "params": {"widths": [8], "out_dim": 16,
                                                                           "norm_groups": 4}},
              "decoder": {"dim": 16, "layers": 1, "heads": 2, "max_length": 6, "label_smoothing": 0.1}}
    model = build_report_generator(config)
    assert model.label_smoothing == 0.1 and len(model.layers) == 1
    assert model(images(1), random_tokens(1, 4)).logits.shape == (1, 4, VOCAB)
    assert isinstance(build_report_generator(ReportGeneratorConfig(vocab_size=20)), ReportGenerator)
    volume = build_report_generator({"vocab_size": 20, "modality": "volume",
                                     "encoder": {"name": "cnn", "params": {"widths": [8], "norm_groups": 4}},
                                     "decoder": {"dim": 12, "heads": 2, "max_length": 6}})
    reports = volume.generate(torch.rand(1, 1, 8, 8, 8), max_length=3)
    assert reports[0].grid == (4, 4, 4) and reports[0].mean_attention.shape[1] == 64


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"vocab_size": 20, "extra": 1}, "extra"),
        ({"vocab_size": 20, "encoder": {"name": "nope"}}, "unknown image encoder 'nope'; known: .*cnn"),
        ({"vocab_size": 20, "encoder": {"name": "cnn", "params": {"depth": 3}}}, r"unknown parameter\(s\) \['depth'\]"),
        ({"vocab_size": 20, "decoder": {"dim": 10, "heads": 4}}, "heads to divide dim=10"),
        ({"vocab_size": 3}, r"below vocab_size=3, received \{'eos_id': 3\}"),
        ({"vocab_size": 20, "eos_id": 2}, "distinct special ids"),
    ],
)
def test_bad_config(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_report_generator(config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heads": 3}, "heads to divide dim=32, received heads=3"),
        ({"dropout": 1.0}, r"dropout in \[0, 1\), received 1.0"),
        ({"max_length": 1}, "max_length to be an int >= 2, received 1"),
        ({"eos_id": 2}, "distinct special ids"),
        ({"bos_id": 50}, r"bos_id in \[0, vocab_size=50\), received 50"),
        ({"layers": 0}, "layers to be an int >= 1, received 0"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(**kwargs)


def test_rejects_a_non_spatial_encoder() -> None:
    encoder = ENCODERS["vitals"].build("mlp", num_features=4)
    with pytest.raises(ValueError, match="expected image_encoder to be a SpatialEncoder"):
        ReportGenerator(encoder, VOCAB)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: (images(2), random_tokens(2, 4).float(), None), "integer token ids, received torch.float32"),
        (lambda: (images(2), random_tokens(2, 4)[0], None), r"tokens \(B, T\) with T >= 1, received \(4,\)"),
        (lambda: (images(2), random_tokens(2, 4) + 50, None), r"token ids in \[0, 50\)"),
        (lambda: (images(2), random_tokens(2, 11), None), "at most max_length=10 tokens, received 11"),
        (lambda: (images(2), random_tokens(2, 4), torch.ones(2, 4)), "token_mask .* bool tensor"),
        (lambda: (images(2), random_tokens(2, 4), torch.ones(2, 3, dtype=torch.bool)), "token_mask"),
        (lambda: (images(2), random_tokens(2, 4).fill_(7), None), "start with a real bos_id=2"),
        (lambda: (images(3), random_tokens(2, 4), None), r"as many token rows as images \(3\), received 2"),
        (lambda: (torch.rand(2, 3, 32, 32), random_tokens(2, 4), None), "image: expected size 1 at dim 1"),
    ],
)
def test_bad_forward_inputs(model: ReportGenerator, build, message: str) -> None:
    x, tokens, mask = build()
    with pytest.raises(ValueError, match=message):
        model(x, tokens, mask)


def test_loss_needs_a_target(model: ReportGenerator) -> None:
    with pytest.raises(ValueError, match="at least one real target token"):
        model.loss(images(2), random_tokens(2, 1))
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[:, 0] = True
    with pytest.raises(ValueError, match="with 0 real targets"):
        model.loss(images(2), random_tokens(2, 3), mask)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "sample"}, "method 'greedy' or 'beam', received 'sample'"),
        ({"method": "beam", "beam_size": 0}, r"beam_size to be an int >= 1, received 0"),
        ({"beam_size": 2}, "beam_size applies to method='beam' only"),
        ({"max_length": 0}, r"max_length to be an int in \[1, 9\], received 0"),
        ({"max_length": 10}, r"max_length to be an int in \[1, 9\], received 10"),
        ({"max_length": 4, "min_length": 4}, r"min_length to be an int in \[0, 3\], received 4"),
        ({"no_repeat_ngram": -1}, "no_repeat_ngram to be an int >= 0, received -1"),
        ({"length_penalty": float("nan")}, "length_penalty to be a finite number, received nan"),
    ],
)
def test_bad_generate_arguments(model: ReportGenerator, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model.generate(images(1), **kwargs)


def test_bad_decode_steps(model: ReportGenerator) -> None:
    cache = model.start_cache(model.encode_images(images(2)))
    with pytest.raises(ValueError, match=r"step tokens of shape \(2,\), received \(2, 1\)"):
        model.decode_step(torch.full((2, 1), BOS), cache)
    for _ in range(10):
        model.decode_step(torch.full((2,), BOS), cache)
    with pytest.raises(ValueError, match="the cache holds max_length=10 tokens"):
        model.decode_step(torch.full((2,), BOS), cache)
