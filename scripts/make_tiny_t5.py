"""Write a tiny randomly initialised T5 encoder with a word-level tokenizer to a folder, for trying the
text-to-image path offline (no pretrained encoder can be fetched there). Its features carry no meaning beyond
telling the words apart; use google/flan-t5-xl (the paper's) for real work.

    python scripts/make_tiny_t5.py OUT_FOLDER [--width 64] [--words "a red cat ..."]
"""

from __future__ import annotations

import argparse

import torch

DEFAULT_WORDS = ("a an the two three one of to left right above below red green blue yellow cyan magenta white "
                 "black cat dog horse zebra sheep cow bird deer frog fox and with")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--words", default=DEFAULT_WORDS)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = list(dict.fromkeys(a.words.split()))
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>").save_pretrained(a.out)
    torch.manual_seed(a.seed)
    cfg = transformers.T5Config(vocab_size=len(vocab), d_model=a.width, d_kv=a.width // 4, d_ff=2 * a.width,
                                num_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    transformers.T5EncoderModel(cfg).save_pretrained(a.out)
    print(f"wrote a {a.width}-wide T5 encoder with {len(vocab)} words to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
