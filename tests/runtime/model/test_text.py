"""Incremental detokenisation: what a request streams and returns is what decoding all of its
tokens at once gives, at a cost per token that does not grow with the output."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from bem_runtime.model.text import RowOutput
from bem_runtime.model.toy import _TEXT, build_tokenizer
from bem_runtime.model.types import SamplingParams

EOS = 1


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer: words carry a leading '▁' that decodes to a space, except
    at the start of a text, so a token decodes differently alone and after another."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<unk>"])
    tok.train_from_iterator([_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


TOKENIZERS = {"byte-level": build_tokenizer(), "metaspace": metaspace_tokenizer()}


class CountingTokenizer:
    """Wraps a tokenizer and records how many ids each decode call was given."""

    def __init__(self, inner) -> None:
        self.inner, self.sizes = inner, []

    def decode(self, ids, **kwargs) -> str:
        self.sizes.append(len(ids))
        return self.inner.decode(ids, **kwargs)


def run(tokenizer, ids: list[int], params: SamplingParams) -> tuple[RowOutput, list[str]]:
    out, deltas = RowOutput(tokenizer, params, {EOS}), []
    for token in ids:
        deltas.append(out.push(token))
        if out.done:
            break
    return out, deltas


def full_decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


# Text with multi-byte characters, which the byte-level toy splits into tokens that end inside a
# character (each alone decodes to U+FFFD).
TEXTS = st.text(alphabet=st.sampled_from(list("abc xyz.,\né€😀ü字 ")), min_size=0, max_size=60)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
@settings(max_examples=150, deadline=None)
@given(text=TEXTS, noise=st.lists(st.integers(min_value=0, max_value=299), max_size=12), eos=st.booleans())
def test_streamed_and_final_text_equal_decoding_all_tokens_at_once(name, text, noise, eos):
    tok = TOKENIZERS[name]
    ids = tok(text, add_special_tokens=False).input_ids + noise  # noise: arbitrary, even invalid, bytes
    ids = [i for i in ids if i != EOS] + ([EOS] if eos else [])
    params = SamplingParams(max_new_tokens=len(ids) + (0 if eos else 1) or 1, temperature=0.0)
    out, deltas = run(tok, ids, params)
    want = full_decode(tok, [i for i in ids if i != EOS])
    if out.done:
        assert out.text == want
        assert "".join(deltas) == want
    else:  # no EOS and room left: what was streamed is a prefix of the full text, never a U+FFFD it fixes later
        assert want.startswith("".join(deltas))
    assert out.sampled == len(ids)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_a_token_decodes_a_window_not_the_whole_output(name):
    """The old RowOutput decoded every token so far on every step: 300 tokens cost 45,000 ids
    decoded. Plain text now decodes a window of two tokens or so, however long the output."""
    tok = CountingTokenizer(TOKENIZERS[name])
    ids = TOKENIZERS[name](_TEXT * 3, add_special_tokens=False).input_ids[:300]
    assert len(ids) == 300
    out, deltas = run(tok, ids, SamplingParams(max_new_tokens=300, temperature=0.0))
    assert out.text == full_decode(TOKENIZERS[name], ids) == "".join(deltas)
    assert max(tok.sizes) <= 8, max(tok.sizes)
    assert sum(tok.sizes) <= 6 * len(ids)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_a_stop_string_across_tokens_is_cut_and_never_streamed(name):
    tok = TOKENIZERS[name]
    text = "She sells sea shells by the sea shore."
    ids = tok(text, add_special_tokens=False).input_ids
    full = full_decode(tok, ids)
    stop = "shells by"
    out, deltas = run(tok, ids, SamplingParams(max_new_tokens=100, temperature=0.0, stop=("nope", stop)))
    assert out.finish_reason == "stop"
    assert out.text == full[: full.find(stop)] == "".join(deltas)
    assert out.sampled < len(ids)
